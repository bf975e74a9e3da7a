"""The reconciler with a large backlog of stranded reservations (seeded straight into PostgreSQL
and Redis by harness/stranded.py, on an empty topic: no lag, nothing decided).

- A stop is prompt whatever the backlog: SIGTERM to the lag exporter that hosts the reconciler,
  and SIGINT to ``make run``'s stack (``coupon-issuer dev``), end the process within a few
  seconds while a pass is settling tens of thousands; the next passes settle the rest, each once.
- A pass settles in batches and says so once per coupon: one summary line per coupon (count,
  reason, example request ids) instead of one line per reservation; the metric counts them all.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import cast

import pytest

from app.adapters import postgres_setup, redis_client
from app.adapters.redis_gate import RedisGate, decode_outcome
from app.config import Settings
from app.local.processes import free_port
from app.local.stack import child_env, prepare, spawn
from app.observability import metrics
from app.reconciler.reconcile import open_reconciler
from harness import wait_until
from harness.stranded import Seeded, held, seed_stranded
from tests.stack import isolated_settings

# Big enough that settling it takes the code before the fix a minute or more on the 2-core
# machine (about 1,000 reservations a second, one at a time), seeded in a few seconds.
BACKLOG_COUPONS, BACKLOG_PER_COUPON = 6, 10_000
STOP_BOUND_S = 10.0  # "within a few seconds": the exporter stops in about 1 s without a backlog


def _settings(kafka_bootstrap: str) -> Settings:
    return isolated_settings(
        kafka_bootstrap,
        reconcile_interval_s=0.5,
        lag_exporter_port=free_port(),
        lag_exporter_interval_s=0.5,
    )


async def _seeded_backlog(
    settings: Settings, coupons: int, per_coupon: int
) -> tuple[list[Seeded], list[uuid.UUID]]:
    """Stranded reservations seeded on new coupons, and those coupons' ids (sorted)."""
    await asyncio.to_thread(prepare, settings)
    seeded = await seed_stranded(settings, coupons, per_coupon)
    return seeded, sorted({s.coupon_id for s in seeded})


async def _settling_started(settings: Settings, coupon_ids: list[uuid.UUID], total: int) -> int:
    """Wait until a pass has given back some of the backlog, not all: it is mid-backlog."""

    async def some_given_back() -> int:
        left = await held(settings, coupon_ids)
        return left if left < total else 0

    left = await wait_until(some_given_back, 120, "the reconciler to start settling the backlog")
    assert left > 0, "the whole backlog was settled before the stop: make it larger"
    return left


async def _settle_the_rest(settings: Settings, seeded: list[Seeded]) -> None:
    """The next passes (a new reconciler, as after a restart) settle what the stop left, once."""
    coupon_ids = sorted({s.coupon_id for s in seeded})
    async with open_reconciler(settings) as reconciler:

        async def none_held() -> bool:
            await reconciler.run_pass()
            return await held(settings, coupon_ids) == 0

        await wait_until(none_held, 120, "the next passes to settle the rest")
    pool = await postgres_setup.create_pool(settings.database_url, settings.db_schema, 1)
    try:
        failed = await pool.fetchval(
            "SELECT count(*) FROM failed_requests WHERE reason = 'NOT_QUEUED'"
            " AND coupon_id = ANY($1::uuid[])",
            coupon_ids,
        )
    finally:
        await pool.close()
    assert failed == len(seeded)
    client = redis_client.connect(settings)
    try:
        gate = RedisGate(client, settings.redis_prefix)
        for coupon_id in coupon_ids:
            # bytes: the client does not decode responses
            entries = cast(dict[bytes, bytes], await client.hgetall(gate.outcomes_key(coupon_id)))
            outcomes = [decode_outcome(e.decode()) for e in entries.values()]
            assert len(outcomes) == BACKLOG_PER_COUPON
            assert {(o.status.value, o.reason) for o in outcomes} == {("FAILED", "NOT_QUEUED")}
    finally:
        await client.aclose()


async def _stop_time(proc: subprocess.Popen[bytes], sig: signal.Signals) -> float:
    started = time.monotonic()
    proc.send_signal(sig)
    try:
        await asyncio.to_thread(proc.wait, 300)  # the code before the fix: about a minute
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return time.monotonic() - started


def _start_dev(settings: Settings, cwd: Path) -> subprocess.Popen[bytes]:
    """make run's stack on the session's servers (given, so it starts none of its own): what is
    timed is the stack's own stop, its reconciler mid-backlog included. In ``cwd``: it writes
    its env file there."""
    with (cwd / "dev.log").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "dev", "--no-autoscale", "--consumers", "1"],
            env=child_env(settings),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_sigterm_stops_the_lag_exporter_promptly_mid_backlog(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap)
    seeded, coupon_ids = await _seeded_backlog(settings, BACKLOG_COUPONS, BACKLOG_PER_COUPON)
    exporter = spawn(
        "lag-exporter", ["lag-exporter"], child_env(settings), tmp_path / "exporter.log"
    )
    try:
        left = await _settling_started(settings, coupon_ids, len(seeded))
        took = await _stop_time(exporter.popen, signal.SIGTERM)
    finally:
        exporter.stop()
    log = (tmp_path / "exporter.log").read_text()
    print(f"lag exporter: SIGTERM with {left} reservations left, exited after {took:.2f}s")
    assert exporter.popen.returncode == 0, log[-3000:]
    assert took < STOP_BOUND_S, f"took {took:.1f}s to stop with {left} left"
    assert "left for the next pass" in log
    await _settle_the_rest(settings, seeded)


async def test_ctrl_c_stops_the_dev_stack_promptly_mid_backlog(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap)
    seeded, coupon_ids = await _seeded_backlog(settings, BACKLOG_COUPONS, BACKLOG_PER_COUPON)
    dev = _start_dev(settings, tmp_path)
    try:
        left = await _settling_started(settings, coupon_ids, len(seeded))
        took = await _stop_time(dev, signal.SIGINT)
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
    log = (tmp_path / "dev.log").read_text()
    print(f"dev stack: SIGINT with {left} reservations left, exited after {took:.2f}s")
    assert dev.returncode == 0, log[-3000:]
    assert took < STOP_BOUND_S + 5, f"took {took:.1f}s to stop with {left} left"  # + its API
    await _settle_the_rest(settings, seeded)


async def test_a_backlog_is_settled_with_one_log_line_per_coupon(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(kafka_bootstrap)
    coupons, per_coupon = 3, 2_000
    seeded, coupon_ids = await _seeded_backlog(settings, coupons, per_coupon)
    released_before = metrics.RECONCILER_RELEASED._value.get()
    caplog.set_level(logging.INFO, logger="app")
    async with open_reconciler(settings) as reconciler:
        first = await reconciler.run_pass()  # first sighting: suspects only
        assert first.released == [] and first.suspects == len(seeded)
        caplog.clear()
        started = time.perf_counter()
        report = await reconciler.run_pass()
        took = time.perf_counter() - started
    print(f"{len(seeded)} reservations settled in {took:.2f}s ({len(seeded) / took:,.0f}/s)")
    assert len(report.released) == len(seeded)
    assert await held(settings, coupon_ids) == 0
    assert metrics.RECONCILER_RELEASED._value.get() - released_before == len(seeded)
    lines = [r.getMessage() for r in caplog.records if r.name == "app.settle"]  # its summaries
    assert len(lines) == coupons, lines[:5]
    for coupon_id in coupon_ids:
        (line,) = [text for text in lines if str(coupon_id) in text]
        assert f"released {per_coupon} stranded reservation(s)" in line
        assert "NOT_QUEUED" in line
        named = {s.request_id for s in seeded if s.coupon_id == coupon_id}
        examples = [w.strip(",;") for w in line.split("requests ", 1)[1].split()]
        assert 1 <= len(examples) <= 5 and {uuid.UUID(e) for e in examples} <= named
