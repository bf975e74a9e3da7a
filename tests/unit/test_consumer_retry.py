"""The worker's one policy for infrastructure faults (app/consumer/retry.py), without servers."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from app.consumer.retry import Abandoned, InfrastructureRetry, Lane
from app.observability import metrics
from harness import wait_until


def _lane() -> Lane:
    return Lane(TopicPartition("t", 0), 0)


class _Flaky:
    """Raises ``fault`` for the first ``failures`` calls, then answers ``"done"``."""

    def __init__(self, failures: int, fault: Exception) -> None:
        self.left = failures
        self.fault = fault
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            raise self.fault
        return "done"


async def test_an_infrastructure_fault_is_waited_out_and_the_lane_shows_stalled_meanwhile() -> None:
    retry, lane = InfrastructureRetry(asyncio.Event(), 0.01), _lane()
    operation = _Flaky(2, ConnectionRefusedError("away"))
    seen_stalled: list[bool] = []

    async def watch() -> None:
        while operation.left:
            seen_stalled.append(retry.is_stalled(lane))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    assert await retry.call(lane, operation) == "done"
    await watcher
    assert operation.calls == 3 and any(seen_stalled)
    assert not retry.is_stalled(lane) and not retry.any_stalled
    assert metrics.CONSUMER_STALLED_PARTITIONS._value.get() == 0


async def test_a_messages_own_fault_is_raised_at_once_without_a_stall() -> None:
    retry, lane = InfrastructureRetry(asyncio.Event(), 0.01), _lane()
    operation = _Flaky(1, ValueError("bad message"))
    with pytest.raises(ValueError):
        await retry.call(lane, operation)
    assert operation.calls == 1 and not retry.any_stalled


async def test_shutdown_during_a_wait_abandons_the_lane_before_another_attempt() -> None:
    stop = asyncio.Event()
    retry, lane = InfrastructureRetry(stop, 5.0), _lane()  # a wait far longer than the test
    operation = _Flaky(10**6, ConnectionRefusedError("away"))
    call = asyncio.create_task(retry.call(lane, operation))
    await wait_until(lambda: retry.is_stalled(lane), 5, "the lane to stall")
    stop.set()
    with pytest.raises(Abandoned):
        await asyncio.wait_for(call, 2)
    assert operation.calls == 1 and lane.abandon.is_set() and not retry.any_stalled


async def test_a_lane_stalled_by_an_outer_wait_stays_stalled_while_an_inner_call_succeeds() -> None:
    retry, lane = InfrastructureRetry(asyncio.Event(), 0.01), _lane()

    class Refused(Exception):
        pass

    inner_saw: list[bool] = []
    outer_attempts = 0

    async def outer() -> str:
        nonlocal outer_attempts
        outer_attempts += 1
        await retry.call(lane, _Flaky(0, ConnectionRefusedError()))  # no fault: no wait
        inner_saw.append(retry.is_stalled(lane))
        if outer_attempts == 1:
            raise Refused
        return "done"

    assert await retry.call(lane, outer, also=(Refused,)) == "done"
    assert inner_saw == [False, True]  # the second attempt runs inside the outer stall
    assert not retry.any_stalled


def test_a_message_s_attempts_are_spaced_by_the_same_capped_schedule() -> None:
    retry = InfrastructureRetry(asyncio.Event(), 0.1, max_s=2.0)
    waits = [retry.backoff_s(n) for n in range(1, 30)]
    assert 0.1 <= waits[0] <= 0.2  # the first step, plus at most one step of jitter
    assert 0.4 <= waits[2] <= 0.5
    assert max(waits) == 2.0 and all(w <= 2.0 for w in waits)  # capped, however many attempts
