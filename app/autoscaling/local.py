"""Local autoscaling for `coupon-issuer dev`: the operator's policy, acting on processes.

The same lag reading and the same :func:`decide` as in Kubernetes; only the actuator differs
(start a consumer process / SIGTERM the newest one instead of patching a Deployment's scale).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from app.adapters.kafka_lag import LagSnapshot
from app.autoscaling.policy import (
    Decision,
    History,
    Observation,
    ScalingSpec,
    decide,
    per_replica_rate,
)

log = logging.getLogger(__name__)


class Consumers(Protocol):
    """Something that runs N consumers."""

    def count(self) -> int: ...

    def scale_to(self, n: int) -> None: ...


@dataclass
class _Previous:
    at: float
    view: LagSnapshot
    replicas: int


class LocalScaler:
    """Polls lag, asks the policy, and resizes the consumer pool; logs every decision."""

    def __init__(
        self,
        read_lag: Callable[[], Awaitable[LagSnapshot]],
        consumers: Consumers,
        spec: ScalingSpec,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_lag = read_lag
        self._consumers = consumers
        self._spec = spec
        self._clock = clock
        self._history: History | None = None
        self._previous: _Previous | None = None
        self.decisions: list[Decision] = []

    async def step(self) -> Decision:
        """One poll: read, decide, act."""
        view = await self._read_lag()
        now = self._clock()
        current = self._consumers.count()
        rate, arrival = self._rates(now, view, current)
        decision = decide(
            Observation(now, view.lag_per_partition, current, rate, arrival),
            self._spec,
            self._history,
        )
        self._history = decision.history
        self._previous = _Previous(now, view, current)
        self.decisions.append(decision)
        if decision.replicas != current:
            log.info(
                "autoscale: %d -> %d consumers: %s", current, decision.replicas, decision.reason
            )
            self._consumers.scale_to(decision.replicas)
        return decision

    def _rates(
        self, now: float, view: LagSnapshot, current: int
    ) -> tuple[float | None, float | None]:
        prev = self._previous
        if prev is None or now <= prev.at:
            return None, None
        seconds = now - prev.at
        arrival = max(0, view.produced_total - prev.view.produced_total) / seconds
        if prev.replicas != current:  # a rebalance pause would look like slow consumers
            return None, arrival
        consumed = view.consumed_total - prev.view.consumed_total
        return per_replica_rate(consumed, seconds, current), arrival

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``spec.poll_seconds`` until ``stop``; a failed read keeps the pool as it is."""
        while not stop.is_set():
            try:
                await self.step()
            except Exception as exc:
                log.warning(
                    "autoscale: lag unreadable, keeping %d consumers: %r",
                    self._consumers.count(),
                    exc,
                )
            try:
                await asyncio.wait_for(stop.wait(), self._spec.poll_seconds)
            except TimeoutError:
                pass
