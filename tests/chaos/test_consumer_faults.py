"""Consumers dying during a sale: SIGKILL mid-batch (three times), and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.chaos.harness import (
    Sale,
    counter_sum,
    record,
    run_verify,
    users,
    wait_blocked,
)
from tests.stack import Stack, coupons_on_every_partition, holding_coupon_rows

pytestmark = pytest.mark.slow

DUPLICATE_DELIVERY = 'coupon_consumer_messages_total{outcome="duplicate_delivery"}'


async def test_sigkill_mid_batch_three_times_during_one_sale(
    chaos_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack, started = chaos_stack, time.monotonic()
    stock, per_wave = 150, 60
    sale = Sale(await coupons_on_every_partition(stack, stock))
    for kill in range(3):
        async with holding_coupon_rows(stack, sale.coupons):
            await sale.wave(stack, users(f"kill{kill}", per_wave))
            # The victim's batch is inside its transaction, blocked on the row lock.
            victim = stack.consumers[min(await wait_blocked(stack, every=False))]
            victim.stop(signal.SIGKILL)
            assert victim.popen.returncode == -signal.SIGKILL
            stack.add_consumer()
    await sale.wave(stack, users("after", per_wave))
    await sale.drain(stack, timeout=120)

    for coupon in sale.coupons:
        assert await stack.outcomes(coupon) == {"ISSUED": stock}
    assert sale.accepted == stock * len(sale.coupons)
    report = await run_verify(stack.settings)
    record(capsys, "sigkill-consumer-x3", sale, report, started, kills=3)


async def test_sigterm_finishes_the_batch_commits_and_leaves_without_redelivery(
    chaos_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack, started = chaos_stack, time.monotonic()
    await stack.wait_for_assignment(len(stack.live_consumers()), timeout=90)
    sale = Sale(await coupons_on_every_partition(stack, 10_000))
    await sale.wave(stack, users("warm", 20))
    await sale.drain(stack)
    everyone = stack.live_consumers()
    baseline = {i: await counter_sum(stack, [i], DUPLICATE_DELIVERY) for i in everyone}

    async with holding_coupon_rows(stack, sale.coupons):
        await sale.wave(stack, users("term", 100))
        victim_index = min(await wait_blocked(stack, every=True))  # all of them mid-batch
        victim = stack.consumers[victim_index]
        survivors = [i for i in everyone if i != victim_index]
        victim.popen.send_signal(signal.SIGTERM)
    # The lock is gone: the victim finishes its batch, commits, leaves the group and exits 0.
    code = await asyncio.to_thread(victim.popen.wait, 30)
    assert code == 0, f"SIGTERM exit code {code}"
    left_at = time.monotonic()
    await stack.wait_for_assignment(len(survivors), timeout=60)
    takeover_s = round(time.monotonic() - left_at, 1)

    await sale.wave(stack, users("after", 100))  # the victim's partitions, now a survivor's
    await sale.drain(stack)
    for coupon in sale.coupons:
        rows = await stack.outcomes(coupon)
        assert rows == {"ISSUED": len(sale.accepted_users[coupon])}

    # No redelivery: nothing the victim committed reached a survivor again.
    for i in survivors:
        seen = await counter_sum(stack, [i], DUPLICATE_DELIVERY) - baseline[i]
        assert seen == 0, f"survivor {i} saw {seen} duplicate deliveries after a graceful stop"
    report = await run_verify(stack.settings)
    record(capsys, "sigterm-consumer", sale, report, started, takeover_s=takeover_s)
