"""``coupon-issuer api``: the HTTP API under uvicorn (COUPON_API_WORKERS processes).

Each worker builds its own app (``app.api.app:create_app``, whose lifespan opens and closes every
client); this module checks the database answers first, bounds connections and request reads,
and hands the workers a shared metrics directory.
"""

from __future__ import annotations

import os
import tempfile

import uvicorn

from app.adapters.postgres_setup import probe_database
from app.api.connections import ConnectionLimits, allow_open_files, bounded_protocol
from app.config import Settings
from app.processes.lifecycle import run


def run_api(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's own handling: in-flight requests finish)."""
    run(probe_database(settings.database_url))  # else uvicorn prints a lifespan traceback
    if settings.api_workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Workers are separate processes; prometheus-client merges their samples via files here.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="coupon-metrics-")
    limits = ConnectionLimits(
        head_timeout_s=settings.api_head_timeout_s,
        body_timeout_s=settings.api_body_timeout_s,
        max_connections=settings.api_max_connections,
    )
    allow_open_files(limits)
    uvicorn.run(
        "app.api.app:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        loop="uvloop",
        # httptools with a deadline on reading each request and a connection cap (docs/security.md)
        http=bounded_protocol(limits),
        ws="none",  # no WebSocket routes: an upgrade request is an ordinary request
        access_log=False,
        log_config=None,
    )
