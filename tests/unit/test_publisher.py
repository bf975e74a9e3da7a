"""The publisher tells "never left" (safe to undo) from "sent, not acknowledged" (may land)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    OutOfOrderSequenceNumber,
    RequestTimedOutError,
    UnknownProducerId,
)

from app.adapters.kafka import BrokerUnavailable, Publisher, PublishUnconfirmed
from app.domain.codec import IssueRequest
from harness import wait_until

REQUEST = IssueRequest(uuid.uuid4(), "u", uuid.uuid4(), datetime.now(UTC))


class _Producer:
    """send() either fails before enqueueing or returns a future settled by ``outcome``."""

    def __init__(self, refuse: Exception | None = None, outcome: Any = None) -> None:
        self.refuse, self.outcome = refuse, outcome

    async def send(self, *_: Any, **__: Any) -> asyncio.Future[Any]:
        if self.refuse is not None:
            raise self.refuse
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if isinstance(self.outcome, Exception):
            future.set_exception(self.outcome)
        elif self.outcome is not None:
            future.set_result(self.outcome)
        return future  # None: never settled (a stalled broker)


class _Meta:
    partition = 2


async def test_acknowledged() -> None:
    assert await Publisher(_Producer(outcome=_Meta()), "t", 1).publish(REQUEST) == 2


async def test_never_enqueued_is_unavailable() -> None:
    publisher = Publisher(_Producer(refuse=KafkaConnectionError()), "t", 1)
    with pytest.raises(BrokerUnavailable):
        await publisher.publish(REQUEST)


@pytest.mark.parametrize("outcome", [RequestTimedOutError(), None])
async def test_sent_but_not_acknowledged_is_unconfirmed(outcome: Any) -> None:
    publisher = Publisher(_Producer(outcome=outcome), "t", 0.05)
    with pytest.raises(PublishUnconfirmed):
        await publisher.publish(REQUEST)


class _StuckProducer:
    """send() never returns: no room in the batch, no metadata (a broker gone at start)."""

    async def send(self, *_: Any, **__: Any) -> asyncio.Future[Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_send_stuck_past_the_deadline_never_left_so_is_unavailable() -> None:
    publisher = Publisher(_StuckProducer(), "t", 0.05)
    with pytest.raises(BrokerUnavailable):
        await publisher.publish(REQUEST)


async def test_a_cancelled_publish_stays_a_cancellation_not_a_timeout() -> None:
    publish = asyncio.ensure_future(Publisher(_Producer(), "t", 30).publish(REQUEST))
    await asyncio.sleep(0)  # it is waiting for the ack now
    publish.cancel()
    with pytest.raises(asyncio.CancelledError):
        await publish


async def test_the_deadline_ends_with_the_publish() -> None:
    assert await Publisher(_Producer(outcome=_Meta()), "t", 0.01).publish(REQUEST) == 2
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.05)  # past the deadline: its timer was cancelled, nothing cancels us


class _HeldProducer:
    """send() returns a future the test settles; ``stopped`` once stop() was called."""

    def __init__(self) -> None:
        self.sent: list[asyncio.Future[Any]] = []
        self.stopped = False

    async def send(self, *_: Any, **__: Any) -> asyncio.Future[Any]:
        self.sent.append(asyncio.get_running_loop().create_future())
        return self.sent[-1]

    async def stop(self) -> None:
        self.stopped = True


def _renewing(publisher_made: list[_HeldProducer]) -> Any:
    async def renew() -> _HeldProducer:
        publisher_made.append(_HeldProducer())
        return publisher_made[-1]

    return renew


async def test_a_press_that_stops_waiting_leaves_its_send_alone() -> None:
    producer = _HeldProducer()
    publish = asyncio.ensure_future(Publisher(producer, "t", 30).publish(REQUEST))
    await asyncio.sleep(0)
    publish.cancel()
    with pytest.raises(asyncio.CancelledError):
        await publish
    # the record is in the producer's batch and goes out anyway: its future is the producer's
    assert not producer.sent[0].cancelled()
    producer.sent[0].set_result(_Meta())  # the broker's ack, to nobody: no error


async def _answered(error: Exception) -> tuple[Publisher, _HeldProducer, list[_HeldProducer]]:
    """A press whose send the broker answers with ``error`` while the press waits."""
    old, made = _HeldProducer(), list[_HeldProducer]()
    publisher = Publisher(old, "t", 30, _renewing(made))
    publish = asyncio.ensure_future(publisher.publish(REQUEST))
    await asyncio.sleep(0)
    old.sent[0].set_exception(error)
    expected = BrokerUnavailable if isinstance(error, UnknownProducerId) else PublishUnconfirmed
    with pytest.raises(expected):
        await publish  # the answer's callback has run: a replacement, if any, has begun
    return publisher, old, made


async def test_a_refused_record_is_unavailable_and_replaces_the_producer() -> None:
    publisher, old, made = await _answered(UnknownProducerId())
    await wait_until(lambda: old.stopped, 5, "the refused producer to be replaced", 0.001)
    assert len(made) == 1 and publisher.producer is made[0] and old.stopped


async def test_a_refusal_nobody_waits_for_any_more_still_replaces_the_producer() -> None:
    old, made = _HeldProducer(), list[_HeldProducer]()
    publisher = Publisher(old, "t", 0.01, _renewing(made))
    with pytest.raises(PublishUnconfirmed):  # the deadline passed: the press gave up
        await publisher.publish(REQUEST)
    old.sent[0].set_exception(OutOfOrderSequenceNumber())  # then the broker refused it
    await wait_until(lambda: old.stopped, 5, "the refused producer to be replaced", 0.001)
    assert len(made) == 1 and publisher.producer is made[0] and old.stopped


async def test_an_error_that_is_not_a_refusal_keeps_the_producer() -> None:
    publisher, old, made = await _answered(RequestTimedOutError())
    await asyncio.sleep(0)  # a replacement would have started by now; none may
    assert made == [] and publisher.producer is old and not old.stopped
