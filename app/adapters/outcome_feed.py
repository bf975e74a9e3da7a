"""Outcome announcements from Redis pub/sub, for status long-polls.

The consumer publishes, after each batch, the users of each coupon that just got an outcome (see
``RedisGate.record_outcomes``). One subscription per API process wakes the long-polls waiting on
those users; a poll still re-reads Redis every few seconds, so a lost message only delays it.

On a Redis Cluster the subscription is on one node: the cluster forwards every classic PUBLISH to
every node, so that node hears the announcements of every coupon. When it is lost, the feed
resubscribes on the next node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from uuid import UUID

from app.adapters.redis_client import RedisClient, subscriber
from app.waits import cancel_and_wait

log = logging.getLogger(__name__)
_RECONNECT_S = 1.0


class OutcomeFeed:
    """Wakes waiters when their (coupon, user) is announced."""

    def __init__(self, client: RedisClient, pattern: str, prefix: str) -> None:
        self._redis = client
        self._pattern = pattern
        self._prefix = prefix  # the channel is "<prefix><coupon id>"
        self._waiting: dict[tuple[str, str], set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    @contextlib.contextmanager
    def waiter(self, coupon_id: UUID, user_id: str) -> Iterator[asyncio.Event]:
        """An event set when this user's outcome is announced (register before reading)."""
        key = (str(coupon_id), user_id)
        event = asyncio.Event()
        self._waiting.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiting.get(key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[key]

    async def _listen(self) -> None:
        turn = 0  # which cluster node to subscribe on: the next one after a failure
        while True:
            try:
                async with await subscriber(self._redis, turn) as pubsub:
                    await pubsub.psubscribe(self._pattern)
                    async for message in pubsub.listen():
                        if message.get("type") == "pmessage":
                            self._wake(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: polls fall back to re-reading
                log.warning("outcome feed lost its subscription, resubscribing: %r", exc)
                turn += 1
                await asyncio.sleep(_RECONNECT_S)

    def _wake(self, channel: bytes | str, data: bytes | str) -> None:
        if not self._waiting:
            return
        channel = channel.decode() if isinstance(channel, bytes) else channel
        coupon = channel.removeprefix(self._prefix)
        users = data.decode() if isinstance(data, bytes) else data
        for user in users.split("\n"):
            for event in self._waiting.get((coupon, user), ()):
                event.set()
