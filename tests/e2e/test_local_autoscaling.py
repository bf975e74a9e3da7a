"""`coupon-issuer dev` scaling: the operator's policy starting and stopping consumer processes."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import pytest

from app.adapters.kafka_lag import ReconnectingLagReader
from app.local.scaler import LocalScaler
from app.local.stack import ConsumerProcesses, child_env, dev_scaling_spec
from harness import wait_until
from tests.stack import (
    Stack,
    consumers_waiting_on_locks,
    coupons_on_every_partition,
    holding_coupon_rows,
    isolated_settings,
)

STOCK = 150
USERS = 200


async def test_burst_scales_consumers_up_to_partitions_and_back_without_loss(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = await Stack(isolated_settings(kafka_bootstrap), tmp_path).start(consumers=0)
    settings = stack.settings
    pool = ConsumerProcesses(child_env(settings), tmp_path)
    lag = ReconnectingLagReader(settings.kafka_bootstrap)
    # make run's spec, quicker: this burst is small
    spec = dev_scaling_spec(settings).model_copy(
        update={
            "target_drain_seconds": 2,
            "lag_per_replica": 50,
            "scale_down_stabilization_seconds": 6,
        }
    )
    read = functools.partial(lag.read, settings.topic, settings.consumer_group)
    scaler = LocalScaler(read, pool, spec)
    stop = asyncio.Event()
    pool.scale_to(1)
    task = asyncio.create_task(scaler.run(stop))
    try:
        coupons = await coupons_on_every_partition(stack, STOCK)
        # A slow database: the consumer's batches wait on the coupon rows, so lag builds up.
        started = time.monotonic()
        async with holding_coupon_rows(stack, coupons):
            first = await asyncio.gather(
                *(stack.request_issue(c, f"a{i}") for c in coupons for i in range(USERS // 2))
            )

            async def at_partition_count() -> bool:
                return pool.count() == settings.partitions

            await wait_until(at_partition_count, 30, "the consumers to scale up to partitions")
            scaled_up_after = time.monotonic() - started

            async def blocked() -> bool:  # the new consumers have their partitions and wait too
                return await consumers_waiting_on_locks(stack) >= 1

            await wait_until(blocked, 30, "a batch waiting on the locked rows")
        # More presses while the group rebalances and drains.
        second = await asyncio.gather(
            *(stack.request_issue(c, f"b{i}") for c in coupons for i in range(USERS // 2))
        )
        accepted = sum(r.status_code == 202 for r in [*first, *second])
        assert accepted == STOCK * len(coupons)
        for coupon_id in coupons:
            await stack.wait_processed(coupon_id, STOCK, timeout=60)
        drained_after = time.monotonic() - started

        async def back_to_one() -> bool:
            return pool.count() == 1

        await wait_until(back_to_one, 40, "the consumers to scale back down to one")
        scaled_down_after = time.monotonic() - started
        for coupon_id in coupons:
            assert await stack.outcomes(coupon_id) == {"ISSUED": STOCK}
        assert max(d.replicas for d in scaler.decisions) == settings.partitions
        assert all(d.replicas <= settings.partitions for d in scaler.decisions)
        with capsys.disabled():
            print(
                f"\n[local autoscaling] 1 -> {settings.partitions} consumers {scaled_up_after:.1f}s"
                f" after the burst began; drained at {drained_after:.1f}s;"
                f" back to 1 at {scaled_down_after:.1f}s; {accepted} accepted, all issued once"
            )
    finally:
        stop.set()
        await task
        await lag.close()
        await asyncio.to_thread(pool.stop_all)
        await stack.stop()
