"""The publisher tells "never left" (safe to undo) from "sent, not acknowledged" (may land)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, RequestTimedOutError

from app.adapters.kafka import BrokerUnavailable, Publisher, PublishUnconfirmed
from app.domain.codec import IssueRequest

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
