"""The lag exporter: consumer lag and sale gauges for Prometheus, even at zero consumers.

Every ``poll_interval_s`` it reads the group's lag and members with app/adapters/kafka_lag.py (high
watermarks from a fetch, commits from the group coordinator), the timestamp of the oldest
unconsumed record of each lagging partition (its ``OldestRecordProbe``), and the active coupons
from PostgreSQL (app/adapters/postgres_coupons.py). Scrapes are
answered from the latest poll, so a slow broker never makes a scrape time out. The process that
serves it is wired in app/processes/lag_exporter.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)

from app.adapters.kafka_lag import LagSnapshot, OldestRecordProbe
from app.adapters.postgres_coupons import CouponReader
from app.observability.lag_state import CouponGauge, ExporterState
from app.waits import until_set, within

log = logging.getLogger(__name__)


class LagSource(Protocol):
    """Reads a consumer group's lag on a topic (a :class:`ReconnectingLagReader`, or a fake)."""

    async def read(self, topic: str, group: str) -> LagSnapshot: ...

    async def close(self) -> None: ...


class LagExporter:
    """The poll loop: reads every source, records the result (or the failure) in the state."""

    def __init__(
        self,
        lag_source: LagSource,
        topic: str,
        group: str,
        probe: OldestRecordProbe,
        coupons: CouponReader | None,
        state: ExporterState,
        poll_interval_s: float,
    ) -> None:
        self.lag_source = lag_source
        self.topic = topic
        self.group = group
        self.probe = probe
        self.coupons = coupons
        self.state = state
        self.poll_interval_s = poll_interval_s

    async def poll_once(self) -> None:
        """One poll of Kafka and PostgreSQL, side by side; failures are counted, never raised."""
        await asyncio.gather(self._poll_kafka(), self._poll_postgres())

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            await self.poll_once()
            pause = max(0.0, self.poll_interval_s - (time.monotonic() - started))
            await until_set(stop, pause)

    async def close(self) -> None:
        for close in (self.lag_source.close, self.probe.close):
            try:
                await close()
            except Exception as exc:  # closing must not hide the reason we stop
                log.warning("closing a Kafka client failed: %r", exc)
        if self.coupons is not None:
            await self.coupons.close()

    async def _poll_kafka(self) -> None:
        async def read() -> None:
            snapshot = await self.lag_source.read(self.topic, self.group)
            ages = await self.probe.oldest_ages(snapshot.topic, snapshot.partitions, time.time())
            self.state.record_lag(time.monotonic(), snapshot, ages)

        await self._timed("kafka", read)

    async def _poll_postgres(self) -> None:
        reader = self.coupons
        if reader is None:
            return

        async def read() -> None:
            coupons, truncated = await reader.read(datetime.now(UTC))
            gauges = [
                CouponGauge(
                    str(c.id), c.name, c.total_quantity, c.issued_quantity, c.remaining_quantity
                )
                for c in coupons
            ]
            self.state.record_coupons(gauges, truncated)

        await self._timed("postgres", read)

    async def _timed(self, source: str, operation: Callable[[], Awaitable[None]]) -> None:
        started = time.monotonic()
        try:
            await within(operation(), max(self.poll_interval_s, 10.0))
        except Exception as exc:
            log.warning("lag exporter: %s poll failed: %r", source, exc)
            self.state.record_poll(source, False, time.time(), time.monotonic() - started)
            return
        self.state.record_poll(source, True, time.time(), time.monotonic() - started)


def exporter_registry(state: ExporterState) -> CollectorRegistry:
    """Its own registry: the exporter exposes lag, sale gauges and its process, not API metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(state)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry
