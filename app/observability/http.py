"""A small HTTP server for worker processes: /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

ReadyCheck = Callable[[], Awaitable[bool]]


def health_app(ready: ReadyCheck, registry: CollectorRegistry = REGISTRY) -> Starlette:
    """/metrics from ``registry``, /healthz (alive), /readyz (``ready()``)."""

    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        ok = await ready()
        return PlainTextResponse("ready" if ok else "not ready", status_code=200 if ok else 503)

    return Starlette(
        routes=[
            Route("/metrics", metrics_endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ]
    )


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals alone: the worker owns SIGTERM (graceful drain)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve_in_background(
    app: Starlette, host: str, port: int
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Run ``app`` on the current loop; returns the server (``should_exit`` stops it) and its task."""
    server = _QuietServer(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    )
    return server, asyncio.create_task(server.serve())
