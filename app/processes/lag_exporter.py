"""``coupon-issuer lag-exporter``: the lag exporter and the reconciler, side by side in one process.

The exporter (app/observability/exporter.py) polls Kafka and PostgreSQL and serves /metrics; the
reconciler (app/reconciler/reconcile.py) settles reservations that have no outcome. The chart runs
both in one pod, so this process serves the reconciler's metrics beside the exporter's and stops
both on SIGTERM: the reconciler within its grace, then the server, then the exporter's clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from app.adapters.kafka_lag import OldestRecordProbe, ReconnectingLagReader
from app.adapters.postgres_coupons import CouponReader
from app.config import Settings
from app.observability import metrics
from app.observability.exporter import LagExporter, LagSource, exporter_registry
from app.observability.http import health_app, serve_in_background
from app.observability.lag_state import ExporterState
from app.processes.lifecycle import stop_event_on_signals
from app.reconciler.reconcile import STOP_GRACE_S, reconcile_until
from app.waits import within

log = logging.getLogger(__name__)

# What the reconciler beside the exporter reports, served on the exporter's /metrics.
RECONCILER_METRICS = (
    metrics.RECONCILER_RUNS,
    metrics.RECONCILER_RELEASED,
    metrics.RECONCILER_SUSPECTS,
)


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
        stop = stop_event_on_signals()

    async def ready() -> bool:  # a Kafka poll succeeded lately
        return state.kafka_ok_since(time.time() - 3 * max(poll_interval_s, 5.0))

    registry = exporter_registry(state)
    for metric in RECONCILER_METRICS:
        registry.register(metric)
    server, server_task = serve_in_background(
        health_app(ready, registry),
        settings.api_host,
        settings.lag_exporter_port if port is None else port,
    )
    log.info(
        "lag exporter and reconciler started: group=%s topic=%s every %.1fs",
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
            await within(reconciling, STOP_GRACE_S + 3)
        server.should_exit = True
        await server_task
        await exporter.close()
        log.info("lag exporter stopped")
