"""Chaos helpers: load waves, fault hooks, the verify run and the per-scenario report line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from app.config import Settings
from app.consumer.dlq import list_dead_letters
from app.devstack import child_env
from tests.stack import Stack, consumers_waiting_on_locks, wait_until

REPORT_ENV = "COUPON_CHAOS_REPORT"


@dataclass
class Sale:
    """Every answer the API gave during one scenario, by status code."""

    coupons: list[str]
    answers: Counter[int] = field(default_factory=Counter)
    accepted_users: dict[str, set[str]] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return self.answers[202]

    @property
    def requests(self) -> int:
        return sum(self.answers.values())

    async def wave(self, stack: Stack, users: Sequence[str]) -> Counter[int]:
        """Every user presses on every coupon of the sale, all at once."""
        presses = [(c, u) for c in self.coupons for u in users]
        responses = await asyncio.gather(*(stack.request_issue(c, u) for c, u in presses))
        got: Counter[int] = Counter()
        for (coupon, user), r in zip(presses, responses, strict=True):
            got[r.status_code] += 1
            if r.status_code == 202:
                self.accepted_users.setdefault(coupon, set()).add(user)
        self.answers += got
        assert not [code for code in got if code >= 500 and code != 503], got
        return got

    async def drain(self, stack: Stack, timeout: float = 90) -> None:
        """Wait until every accepted request of the sale has its row."""
        for coupon in self.coupons:
            await stack.wait_processed(coupon, len(self.accepted_users.get(coupon, ())), timeout)


def users(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


@asynccontextmanager
async def coupon_rows_locked(stack: Stack, coupons: Sequence[str]) -> AsyncIterator[None]:
    """Hold the coupons' rows FOR UPDATE: every batch touching them blocks mid-transaction."""
    conn: asyncpg.Connection = await stack.pool.acquire()
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(
            "SELECT id FROM coupons WHERE id = ANY($1::uuid[]) FOR UPDATE",
            [uuid.UUID(c) for c in coupons],
        )
        yield
    finally:
        await tx.rollback()
        await stack.pool.release(conn)


async def wait_blocked_batches(stack: Stack, at_least: int, timeout: float = 60) -> int:
    async def blocked() -> int:
        n = await consumers_waiting_on_locks(stack)
        return n if n >= at_least else 0

    return await wait_until(blocked, timeout, f"{at_least} consumer batches blocked on the lock")


def live_consumers(stack: Stack) -> list[int]:
    return [i for i, p in enumerate(stack.consumers) if p.popen.poll() is None]


async def counter_sum(stack: Stack, indexes: Sequence[int], sample: str) -> float:
    """Sum one sample over these consumers' /metrics (a consumer that does not answer fails)."""
    total = 0.0
    for i in indexes:
        metrics = await stack.consumer_metrics(i)
        assert metrics is not None, f"consumer {i} does not answer /metrics"
        total += metrics.get(sample, 0.0)
    return total


async def dead_letters_for(settings: Settings, coupons: Sequence[str]) -> int:
    keys = {c.encode() for c in coupons}
    entries = await list_dead_letters(settings.kafka_bootstrap, settings.dlq_topic)
    return sum(e.letter.original_key in keys for e in entries)


_CLI_HAS_VERIFY: bool | None = None


async def _cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        env=child_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def run_verify(settings: Settings) -> dict[str, Any]:
    """``coupon-issuer verify --json`` over the whole schema; fails the test on any violation."""
    global _CLI_HAS_VERIFY
    if _CLI_HAS_VERIFY is None:
        _CLI_HAS_VERIFY = (await _cli(settings, "verify", "--help"))[0] == 0
    if _CLI_HAS_VERIFY:
        code, out, err = await _cli(settings, "verify", "--json")
        assert code in (0, 1), f"verify crashed ({code}): {err[-2000:]}"
        report: dict[str, Any] = json.loads(out)
        assert (code == 0) == report["ok"], (code, report)
    else:  # until the subcommand is wired: the same function, in process
        from app.verify import verify

        report = (await verify(settings, None)).to_dict()
    assert report["ok"], "verify found violations:\n" + json.dumps(report["violations"], indent=1)
    return report


def record(
    capsys: pytest.CaptureFixture[str],
    scenario: str,
    sale: Sale,
    report: dict[str, Any],
    started: float,
    **extra: Any,
) -> dict[str, Any]:
    """One line on the terminal and, if $COUPON_CHAOS_REPORT is set, one JSON line in that file."""
    mine = [c for c in report["coupons"] if c["coupon_id"] in set(sale.coupons)]
    line = {
        "scenario": scenario,
        "requests": sale.requests,
        "accepted": sale.accepted,
        "issued": sum(c["issued_quantity"] for c in mine),
        "rejected": sum(c["rejected_total"] for c in mine),
        "dead_lettered": sum(c["dead_lettered"] for c in mine),
        "gate_refused": {str(k): v for k, v in sorted(sale.answers.items()) if k != 202},
        "violations": len(report["violations"]),
        "seconds": round(time.monotonic() - started, 1),
        **extra,
    }
    with capsys.disabled():
        print(
            f"\n[chaos] {scenario}: requests={line['requests']} accepted={line['accepted']}"
            f" issued={line['issued']} rejected={line['rejected']}"
            f" dead_lettered={line['dead_lettered']} violations={line['violations']}"
            f" refused={line['gate_refused']} {line['seconds']}s"
            + "".join(f" {k}={v}" for k, v in extra.items())
        )
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
    return line
