"""Local autoscaling for `coupon-issuer dev`: the operator's policy, acting on processes.

The same lag reader, :func:`observe` and :func:`decide` as in Kubernetes; only the actuator differs
(start a consumer process / SIGTERM the newest one instead of patching a Deployment's scale).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from app.adapters.kafka_lag import LagSnapshot
from app.autoscaling.observation import Reading, observe
from app.autoscaling.policy import History, ScalingDecision, ScalingSpec, decide
from app.waits import until_set

log = logging.getLogger(__name__)


class Consumers(Protocol):
    """Something that runs N consumers."""

    def count(self) -> int: ...

    def scale_to(self, n: int) -> None: ...


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
        self._previous: Reading | None = None
        self.decisions: list[ScalingDecision] = []

    async def step(self) -> ScalingDecision:
        """One poll: read, decide, act."""
        try:
            view = await self._read_lag()
        except Exception:
            self._previous = None  # the next rates must not span the failure
            raise
        reading = Reading(self._clock(), view, self._consumers.count())
        observation, self._previous = observe(reading, self._previous)
        decision = decide(observation, self._spec, self._history)
        self._history = decision.history
        self.decisions.append(decision)
        current = reading.replicas
        if decision.replicas != current:
            log.info(
                "autoscale: %d -> %d consumers: %s", current, decision.replicas, decision.reason
            )
            self._consumers.scale_to(decision.replicas)
        return decision

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
            await until_set(stop, self._spec.poll_seconds)
