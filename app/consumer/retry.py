"""The one policy for waiting out infrastructure faults, and the lanes it waits for.

Every wait of the worker goes through :class:`InfrastructureRetry`: a database or broker fault
around an issue, a probe, a dead-letter send or a poll is retried with capped exponential backoff
(tenacity) for as long as it lasts. A lane that waits is *stalled* (the metric, the log, the
consumer's readiness); the policy marks it on entering a wait and clears it when the call that
waited returns, so nothing else flips it. A wait is cut short by shutdown or by the lane's
revocation; the lane then gives up (:class:`Abandoned`) before its next attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from aiokafka import TopicPartition
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from app.consumer.faults import is_infrastructure
from app.observability import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BACKOFF_S = 5.0


class Abandoned(Exception):
    """The lane gave up (shutdown, or its partition was revoked): nothing more is committed."""


@dataclass(eq=False)
class Lane:
    """One partition's batch in progress: what its waits listen to."""

    tp: TopicPartition
    first_offset: int
    abandon: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def check(self) -> None:
        """Raise :class:`Abandoned` if the lane was told to give up."""
        if self.abandon.is_set():
            raise Abandoned


class InfrastructureRetry:
    """Waits out infrastructure faults: backoff from ``initial_s`` doubling to ``max_s``.

    The same schedule spaces a message's own attempts (``backoff_s``): one policy, capped.
    """

    def __init__(self, stop: asyncio.Event, initial_s: float, max_s: float = MAX_BACKOFF_S) -> None:
        self._stop = stop
        initial_s = max(initial_s, 0.01)
        # Jitter up to one initial step: consumers that failed together do not retry in step.
        self._backoff = wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=initial_s)
        self._stalls: Counter[Lane] = Counter()  # how many calls of each lane are waiting

    def backoff_s(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 = the first): never more than ``max_s``."""
        state = RetryCallState(cast(Any, None), None, (), {})
        state.attempt_number = retry
        return float(self._backoff(state))

    def is_stalled(self, lane: Lane) -> bool:
        return self._stalls[lane] > 0

    @property
    def any_stalled(self) -> bool:
        return any(n > 0 for n in self._stalls.values())

    async def call(
        self,
        lane: Lane | None,
        operation: Callable[[], Awaitable[T]],
        *,
        also: tuple[type[Exception], ...] = (),
    ) -> T:
        """Run ``operation``, retrying it on an infrastructure fault (or one of ``also``).

        ``lane`` None is the poll, which belongs to no lane: its waits stall nothing and a
        shutdown ends them. A lane's attempt is refused once the lane was told to give up.
        """
        stalled = False

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, also) or is_infrastructure(exc)

        def before_sleep(state: RetryCallState) -> None:
            nonlocal stalled
            exc = state.outcome.exception() if state.outcome else None
            if lane is None:
                log.warning("poll failed, polling again: %r", exc)
                return
            if not stalled:
                stalled = True
                self._mark(lane, +1)
            metrics.CONSUMER_RETRIES.labels("transient").inc()
            if isinstance(exc, also):
                log.warning(
                    "partition %d stalled: %s (%r); waiting", lane.tp.partition, exc, exc.__cause__
                )
            else:
                log.warning("infrastructure fault, waiting it out: %r", exc)

        async def sleep(seconds: float) -> None:
            await self._wait(lane, seconds)

        async def attempt() -> T:  # tenacity awaits only what is a coroutine function
            if lane is None:
                if self._stop.is_set():
                    raise Abandoned
            else:
                lane.check()
            return await operation()

        retrying = AsyncRetrying(
            retry=retry_if_exception(retryable),
            wait=self._backoff,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            result: T = await retrying(attempt)
        finally:
            if stalled and lane is not None:
                self._mark(lane, -1)
        if stalled and lane is not None and not self.is_stalled(lane):
            log.info("partition %d: infrastructure back, going on", lane.tp.partition)
        return result

    async def pause(self, lane: Lane, seconds: float) -> None:
        """Wait ``seconds`` between a message's own attempts; raise :class:`Abandoned` if
        shutdown or the lane's revocation cut the wait short."""
        await self._wait(lane, seconds)
        lane.check()

    async def _wait(self, lane: Lane | None, seconds: float) -> None:
        """Sleep until ``seconds`` pass, shutdown, or the lane is told to give up (returns then:
        the next attempt refuses to run, outside tenacity's sleep)."""
        events = [self._stop] if lane is None else [self._stop, lane.abandon]
        waits = [asyncio.create_task(e.wait()) for e in events]
        try:
            done, _ = await asyncio.wait(waits, timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            for w in waits:
                w.cancel()
        if done and lane is not None:
            lane.abandon.set()  # a shutdown during a wait: this lane gives up

    def _mark(self, lane: Lane, change: int) -> None:
        self._stalls[lane] += change
        if self._stalls[lane] <= 0:
            del self._stalls[lane]
        metrics.CONSUMER_STALLED_PARTITIONS.set(len(self._stalls))
