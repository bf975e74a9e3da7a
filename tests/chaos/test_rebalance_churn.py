"""Autoscaling churn: consumers scaled 1 -> 3 -> 1, three times, while batches are in flight.

Each scale-up and scale-down happens while every partition's batch is blocked inside its
transaction (the coupon rows are held), so the rebalance straddles a batch: the old owner must let
it finish and commit before the partition moves, never crash on the commit, and dead-letter
nothing.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from harness import wait_until
from tests.chaos.harness import (
    Sale,
    dead_letters_for,
    record,
    run_verify,
    users,
    wait_blocked,
)
from tests.stack import Stack, coupons_on_every_partition, holding_coupon_rows, isolated_settings

pytestmark = pytest.mark.slow
WAITED_LINE = "rebalance: finishing the batches in flight"


@pytest_asyncio.fixture(loop_scope="session")
async def churn_stack(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Stack]:
    stack = await Stack(isolated_settings(kafka_bootstrap), tmp_path).start(consumers=1)
    yield stack
    await stack.stop()


def _log(stack: Stack, index: int) -> str:
    return (stack.log_dir / f"{stack.consumers[index].name}.log").read_text()


def _waited(stack: Stack) -> int:
    return sum(_log(stack, i).count(WAITED_LINE) for i in range(len(stack.consumers)))


async def test_scaling_1_3_1_while_batches_are_in_flight(
    churn_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack, started = churn_stack, time.monotonic()
    sale = Sale(await coupons_on_every_partition(stack, 10_000))
    exit_codes: list[int | None] = []
    for cycle in range(3):
        # 1 -> 3 while the only consumer has a batch blocked in its transaction.
        async with holding_coupon_rows(stack, sale.coupons):
            seen = _waited(stack)
            await sale.wave(stack, users(f"up{cycle}", 40))
            await wait_blocked(stack, every=True)
            stack.add_consumer()
            stack.add_consumer()

            async def revocation_waits(before: int = seen) -> bool:
                return _waited(stack) > before

            await wait_until(revocation_waits, 60, "a revocation waiting for its batch")
        await stack.wait_for_assignment(3, timeout=90)

        # 3 -> 1 while every consumer has a batch blocked: two leave by SIGTERM.
        async with holding_coupon_rows(stack, sale.coupons):
            await sale.wave(stack, users(f"down{cycle}", 40))
            await wait_blocked(stack, every=True)
            victims = [stack.consumers[i] for i in stack.live_consumers()[1:]]
            for victim in victims:
                victim.popen.send_signal(signal.SIGTERM)
        for victim in victims:
            exit_codes.append(await asyncio.to_thread(victim.popen.wait, 60))
        await stack.wait_for_assignment(1, timeout=90)

    await sale.wave(stack, users("after", 40))
    await sale.drain(stack, timeout=120)

    assert exit_codes == [0] * 6, exit_codes
    assert len(stack.live_consumers()) == 1
    for i in range(len(stack.consumers)):
        log = _log(stack, i)
        assert "Traceback" not in log and "failed unexpectedly" not in log, log[-3000:]
    for coupon in sale.coupons:
        assert await stack.outcomes(coupon) == {"ISSUED": len(sale.accepted_users[coupon])}
    assert await dead_letters_for(stack.settings, sale.coupons) == 0
    report = await run_verify(stack.settings)
    record(capsys, "autoscaling-churn", sale, report, started, rebalances=12, waited=_waited(stack))
