"""``coupon-issuer lag-exporter``: consumer lag and sale gauges for Prometheus, even at zero consumers.

Every ``poll_interval_s`` it reads the group's lag and members with app/adapters/kafka_lag.py (high
watermarks from a fetch, commits from the group coordinator), the timestamp of the oldest
unconsumed record of each lagging partition (its ``OldestRecordProbe``), and the active coupons
from PostgreSQL (app/adapters/postgres_coupons.py). Scrapes are
answered from the latest poll, so a slow broker never makes a scrape time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
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

from app.adapters.kafka_lag import LagSnapshot, OldestRecordProbe, ReconnectingLagReader
from app.adapters.postgres_coupons import CouponReader
from app.config import Settings
from app.observability import metrics
from app.observability.http import health_app, serve_in_background
from app.observability.lag_state import CouponGauge, ExporterState
from app.reconciler.reconcile import STOP_GRACE_S, reconcile_until

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
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except TimeoutError:
                pass

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
            await asyncio.wait_for(operation(), max(self.poll_interval_s, 10.0))
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
    # The reconciler runs in this process (see run_lag_exporter): its metrics are served here.
    for metric in (
        metrics.RECONCILER_RUNS,
        metrics.RECONCILER_RELEASED,
        metrics.RECONCILER_SUSPECTS,
    ):
        registry.register(metric)
    return registry


async def run_lag_exporter(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    port: int | None = None,
    poll_interval_s: float = 5.0,
    rate_window_s: float = 60.0,
    coupon_limit: int = 50,
    lag_source: LagSource | None = None,
) -> None:
    """Serve /metrics on ``COUPON_LAG_EXPORTER_PORT`` until SIGTERM/SIGINT (or ``stop`` is set).

    Without ``stop`` the process's signals stop it; tests pass their own event instead.
    """
    state = ExporterState(rate_window_s=rate_window_s)
    exporter = LagExporter(
        lag_source or ReconnectingLagReader(settings.kafka_bootstrap),
        settings.topic,
        settings.consumer_group,
        OldestRecordProbe(settings.kafka_bootstrap),
        CouponReader(
            settings.database_url,
            settings.db_schema,
            coupon_limit,
            settings.db_statement_cache_size,
        ),
        state,
        poll_interval_s,
    )
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    async def ready() -> bool:  # a Kafka poll succeeded lately
        return state.kafka_ok_since(time.time() - 3 * max(poll_interval_s, 5.0))

    server, server_task = serve_in_background(
        health_app(ready, exporter_registry(state)),
        settings.api_host,
        settings.lag_exporter_port if port is None else port,
    )
    log.info(
        "lag exporter (and reconciler) started: group=%s topic=%s every %.1fs",
        settings.consumer_group,
        settings.topic,
        poll_interval_s,
    )
    reconciling = asyncio.create_task(
        reconcile_until(settings, stop, settings.reconcile_interval_s)
    )
    try:
        await exporter.run(stop)
    finally:
        stop.set()
        # reconcile_until returns within STOP_GRACE_S of the stop (a pass stops between chunks,
        # or is cancelled); the bound here holds even if it did not.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reconciling, STOP_GRACE_S + 3)
        server.should_exit = True
        await server_task
        await exporter.close()
        log.info("lag exporter stopped")
