"""``coupon-issuer lag-exporter``: consumer lag and sale gauges for Prometheus, even at zero consumers.

Every ``poll_interval_s`` it reads the group's lag and members with app/adapters/kafka_lag.py (high
watermarks from a fetch, commits from the group coordinator), the timestamp of the oldest
unconsumed record of each lagging partition, and the active coupons from PostgreSQL. Scrapes are
answered from the latest poll, so a slow broker never makes a scrape time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)

from app.adapters import postgres
from app.adapters.kafka_lag import LagSnapshot, PartitionLag, ReconnectingLagReader
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


class OldestRecordProbe:
    """Reads the first unconsumed record of each lagging partition, for its timestamp."""

    def __init__(self, bootstrap: str, fetch_timeout_s: float = 2.0) -> None:
        self._bootstrap = bootstrap
        self._fetch_timeout_s = fetch_timeout_s
        self._reader: AIOKafkaConsumer | None = None

    async def _consumer(self) -> AIOKafkaConsumer:
        if self._reader is None:
            # No group: it only reads single records, it must never join or commit.
            reader = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # the record is gone (retention): the oldest left
                max_partition_fetch_bytes=64 * 1024,
                fetch_max_wait_ms=100,
            )
            await reader.start()
            self._reader = reader
        return self._reader

    async def oldest_ages(
        self, topic: str, partitions: Sequence[PartitionLag], wall_now: float
    ) -> dict[int, float]:
        """Seconds since the first unconsumed record of each lagging partition was produced."""
        lagging = {p.partition: p for p in partitions if p.lag > 0}
        if not lagging:
            return {}
        reader = await self._consumer()
        tps = [TopicPartition(topic, n) for n in sorted(lagging)]
        reader.assign(tps)
        for tp in tps:
            reader.seek(tp, lagging[tp.partition].position)
        stamps: dict[int, int] = {}
        deadline = time.monotonic() + self._fetch_timeout_s
        while len(stamps) < len(tps) and time.monotonic() < deadline:
            waiting = [tp for tp in tps if tp.partition not in stamps]
            batch = await reader.getmany(*waiting, timeout_ms=200)
            for tp, records in batch.items():
                if records and records[0].timestamp is not None and records[0].timestamp >= 0:
                    stamps.setdefault(tp.partition, records[0].timestamp)
        return {n: max(0.0, wall_now - ms / 1000) for n, ms in stamps.items()}

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.stop()


class CouponReader:
    """Issued/remaining of the newest active coupons, at most ``limit`` (a bounded label set)."""

    def __init__(
        self, database_url: str, schema: str, limit: int, statement_cache_size: int = 100
    ) -> None:
        self._database_url = database_url
        self._schema = schema
        self._limit = limit
        self._statement_cache_size = statement_cache_size
        self._pool: asyncpg.Pool | None = None

    async def read(self, now: datetime) -> tuple[list[CouponGauge], bool]:
        """The gauges and whether more active coupons exist than ``limit``."""
        if self._pool is None:
            self._pool = await postgres.create_pool(
                self._database_url,
                self._schema,
                1,
                "coupon-lag-exporter",
                self._statement_cache_size,
            )
        async with self._pool.acquire() as conn:
            coupons = await postgres.active_coupons(conn, now, self._limit + 1)
        gauges = [
            CouponGauge(
                str(c.id), c.name, c.total_quantity, c.issued_quantity, c.remaining_quantity
            )
            for c in coupons[: self._limit]
        ]
        return gauges, len(coupons) > self._limit

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


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
            gauges, truncated = await reader.read(datetime.now(UTC))
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
