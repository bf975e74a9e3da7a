"""PostgreSQL faults during a sale: connections killed under the consumers, and a slow database."""

from __future__ import annotations

import time

import pytest

from app.adapters.kafka_lag import read_lag
from app.adapters.postgres_setup import consumer_connection_name
from harness import wait_until
from tests.chaos.harness import (
    Sale,
    blocked_consumers,
    counter_sum,
    dead_letters_for,
    record,
    run_verify,
    users,
    wait_blocked,
)
from tests.stack import Stack, coupons_on_every_partition, holding_coupon_rows

pytestmark = pytest.mark.slow

TRANSIENT_RETRIES = 'coupon_consumer_retries_total{kind="transient"}'
FAILED = 'coupon_consumer_messages_total{outcome="failed"}'


async def terminate_consumer_backends(stack: Stack) -> int:
    """pg_terminate_backend on every connection this stack's consumers hold; how many."""
    n = await stack.pool.fetchval(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = $1",
        consumer_connection_name(stack.settings.consumer_group),
    )
    return int(n)


async def test_postgres_connection_loss_is_retried_nothing_dead_lettered_nothing_lost(
    chaos_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack, started = chaos_stack, time.monotonic()
    stock = 300
    sale = Sale(await coupons_on_every_partition(stack, stock))
    consumers = stack.live_consumers()
    await stack.wait_for_assignment(len(consumers), timeout=90)
    retries_before = await counter_sum(stack, consumers, TRANSIENT_RETRIES)
    terminated = 0
    # Mid-transaction: every partition's batch blocks on the row lock, then loses its connection.
    async with holding_coupon_rows(stack, sale.coupons):
        await sale.wave(stack, users("pg0", 80))
        await wait_blocked(stack, every=True)
        terminated += await terminate_consumer_backends(stack)
    # Between and during batches, twice more, while requests keep coming.
    for round_ in (1, 2):
        await sale.wave(stack, users(f"pg{round_}", 80))
        terminated += await terminate_consumer_backends(stack)
    await sale.wave(stack, users("pg-last", 80))
    await sale.drain(stack, timeout=120)

    assert terminated >= stack.settings.partitions
    for coupon in sale.coupons:
        assert await stack.outcomes(coupon) == {"ISSUED": len(sale.accepted_users[coupon])}
    assert await dead_letters_for(stack.settings, sale.coupons) == 0
    retried = await counter_sum(stack, consumers, TRANSIENT_RETRIES) - retries_before
    assert retried > 0, "the consumers never saw the lost connections"
    report = await run_verify(stack.settings)
    record(
        capsys,
        "postgres-connection-loss",
        sale,
        report,
        started,
        backends_terminated=terminated,
        transient_retries=int(retried),
    )


async def test_slow_database_grows_lag_fails_nothing_and_drains_after(
    chaos_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack, started = chaos_stack, time.monotonic()
    settings = stack.settings
    sale = Sale([await stack.create_coupon(1000)])
    consumers = stack.live_consumers()
    failed_before = await counter_sum(stack, consumers, FAILED)

    async def lag() -> int:
        return (
            await read_lag(settings.kafka_bootstrap, settings.topic, settings.consumer_group)
        ).total_lag

    async with holding_coupon_rows(stack, sale.coupons):
        await sale.wave(stack, users("slow0", 150))
        await wait_blocked(stack, every=False)
        first = await wait_until(lag, 30, "lag while the coupon row is locked")
        await sale.wave(stack, users("slow1", 150))

        async def grown() -> int:
            now = await lag()
            return now if now >= first + 150 else 0

        peak = await wait_until(grown, 30, "lag to grow with the second wave")
        # Nothing failed meanwhile: no outcome yet, every consumer alive and still waiting.
        assert await stack.processed(sale.coupons[0]) == 0
        assert stack.live_consumers() == consumers
        assert await blocked_consumers(stack)
    await sale.drain(stack)

    async def drained() -> bool:
        return await lag() == 0

    await wait_until(drained, 30, "the lag to drain")
    assert await stack.outcomes(sale.coupons[0]) == {"ISSUED": 300}
    assert await counter_sum(stack, consumers, FAILED) == failed_before
    assert await dead_letters_for(settings, sale.coupons) == 0
    report = await run_verify(settings)
    record(capsys, "slow-database", sale, report, started, peak_lag=peak)
