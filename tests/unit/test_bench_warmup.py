"""The whole-system sales start on a warm broker: unrecorded warm-up sales repeat until the
broker's JIT compiler has settled, and no longer than the bench allows."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from bench import flash_sale, whole_system
from bench.cpu import JIT_SETTLED_MS
from bench.options import BenchOptions
from bench.phases import RunContext
from bench.progress import Bar


def _ctx(tmp_path: Path, **opts: Any) -> RunContext:
    return RunContext(
        base=Settings(),
        opts=dataclasses.replace(BenchOptions(), **opts),
        log_dir=tmp_path,
        bar=Bar(False),
        cores=2,
    )


@pytest.fixture
def sales(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Each sale the bench runs (variant, presses), each answering the next JIT reading."""
    ran: list[tuple[str, int]] = []
    readings = iter([0.04, 0.02, JIT_SETTLED_MS / 2, 0.03, 0.03])

    async def fake(ctx: RunContext, variant: str = "current", env: Any = None) -> dict[str, Any]:
        ran.append((variant, ctx.opts.requests))
        return {"broker_jit_ms_per_issued_coupon": next(readings)}

    monkeypatch.setattr(flash_sale, "flash_sale", fake)
    return ran


async def test_warm_up_sales_repeat_until_the_brokers_jit_settles(
    tmp_path: Path, sales: list[tuple[str, int]]
) -> None:
    jits = await whole_system.warm_up(
        _ctx(tmp_path, requests=50_000, sale_warmup=10_000, sale_warmups=4)
    )
    assert jits == [0.04, 0.02, JIT_SETTLED_MS / 2]
    assert sales == [("warmup", 10_000)] * 3  # the warm-up's own size, never the sale's


async def test_warm_up_sales_stop_at_the_most_allowed(
    tmp_path: Path, sales: list[tuple[str, int]]
) -> None:
    assert await whole_system.warm_up(_ctx(tmp_path, sale_warmups=2)) == [0.04, 0.02]
    assert len(sales) == 2


async def test_no_warm_up_when_it_is_turned_off(
    tmp_path: Path, sales: list[tuple[str, int]]
) -> None:
    assert await whole_system.warm_up(_ctx(tmp_path, sale_warmup=0)) == []
    assert sales == []


async def test_one_warm_up_when_the_broker_is_not_ours_to_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []

    async def external(
        ctx: RunContext, variant: str = "current", env: Any = None
    ) -> dict[str, Any]:
        ran.append(variant)
        return {"broker_jit_ms_per_issued_coupon": None}

    monkeypatch.setattr(flash_sale, "flash_sale", external)
    assert await whole_system.warm_up(_ctx(tmp_path)) == [None]
    assert ran == ["warmup"]
