"""FastAPI application factory: dependencies are created in the lifespan, nowhere else."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as prom_multiprocess
from starlette.types import ASGIApp, Receive, Scope, Send
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_fixed

from app.adapters import kafka, postgres_setup, redis_client
from app.adapters.outcome_feed import OutcomeFeed
from app.adapters.rate_limit import RateLimiter
from app.adapters.redis_gate import RedisGate
from app.api.errors import install_error_handlers, json_response, refusal
from app.api.fast_path import IssueFastPath
from app.api.gate_loader import GateLoader
from app.api.messages import negotiate
from app.api.middleware import BodyRules, ObservedRequests
from app.api.routes import AdminAuthRequired, router
from app.api.services import Services
from app.config import Settings

log = logging.getLogger(__name__)
_BROKER_START_ATTEMPTS = 30
_YOUNGEST_GC_THRESHOLD = 20_000  # allocations between collections of the youngest generation


def create_app(settings: Settings | None = None, hot_paths: bool = True) -> CouponApi:
    """Build the app; ``settings`` default to the environment."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await postgres_setup.create_pool(
            settings.database_url,
            settings.db_schema,
            settings.db_pool_size,
            "coupon-api",
            settings.db_statement_cache_size,
        )
        # Presses queue for a Redis connection; a dropped one is replaced and the call retried.
        redis = redis_client.connect_api(settings)

        def new_producer() -> AIOKafkaProducer:
            return kafka.make_producer(
                settings.kafka_bootstrap,
                settings.producer_linger_ms,
                settings.publish_timeout_ms,
                settings.producer_max_batch_bytes,
            )

        async def renewed_producer() -> AIOKafkaProducer:
            producer = new_producer()
            await producer.start()
            return producer

        producer = new_producer()
        await _start_producer(producer)
        publisher = kafka.Publisher(
            producer, settings.topic, settings.publish_timeout_ms / 1000, renewed_producer
        )
        gate = RedisGate(redis, settings.redis_prefix)
        feed = OutcomeFeed(redis, gate.outcomes_pattern(), gate.outcomes_channel(""))
        feed.start()
        svc = Services(
            settings=settings,
            pool=pool,
            gate=gate,
            feed=feed,
            publisher=publisher,
            limiter=RateLimiter(redis, settings.redis_prefix),
            loader=GateLoader(
                pool, gate, settings.db_acquire_timeout_s, settings.gate_rebuild_wait_s
            ),
        )
        app.state.services = svc
        if settings.admin_token is None:
            log.warning("COUPON_ADMIN_TOKEN is not set: the admin endpoints are open")
        try:
            rebuilt = await svc.loader.warm_active_gates()
            if rebuilt:
                log.info("rebuilt %d coupon gate(s) from PostgreSQL", rebuilt)
        except Exception as exc:  # Redis away at start: gates are warmed lazily later
            log.warning("could not warm gates at start: %r", exc)
        # Everything alive now (modules, pools, clients) lives as long as the process: moved out
        # of the collector's generations, no collection during a sale walks it again.
        gc.collect()
        gc.freeze()
        # A press allocates some hundred objects and 64 presses in flight keep thousands alive:
        # at the default threshold (700) the youngest generation was collected every few presses,
        # walking the same in-flight objects each time (py-spy: ~5 % of a worker's samples).
        gc.set_threshold(_YOUNGEST_GC_THRESHOLD)
        try:
            yield
        finally:
            await feed.stop()
            await publisher.stop()
            await redis.aclose()
            await pool.close()

    app = CouponApi(
        max_body_bytes=settings.max_body_bytes,
        hot_paths=hot_paths,
        title="coupon-issuer",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_exception_handler(AdminAuthRequired, _unauthorized)
    app.include_router(router)
    app.add_api_route("/healthz", _healthz, include_in_schema=False)
    app.add_api_route("/readyz", _readyz, include_in_schema=False)
    app.add_api_route(
        "/metrics", _metrics_endpoint(settings.api_workers > 1), include_in_schema=False
    )
    return app


class CouponApi(FastAPI):
    """FastAPI inside the HTTP edge. The edge (api/middleware.py: trace id, metrics, JSON 500,
    body rules) wraps FastAPI itself, and the fast path (api/fast_path.py) is its leaf: the
    sale's two hot requests, a plain press and a status read, skip FastAPI's call, routing,
    validation and dependency injection; every other request goes on to FastAPI. FastAPI
    registers none of these itself. ``hot_paths=False`` leaves every request to FastAPI (the
    contract test compares the two)."""

    def __init__(self, *, max_body_bytes: int, hot_paths: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        framework: ASGIApp = super().__call__
        inner = IssueFastPath(framework, self._services) if hot_paths else framework
        self._edge = ObservedRequests(BodyRules(inner, max_body_bytes=max_body_bytes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Not FastAPI's own __call__ first: it reads settings of its own on every request,
        # which the hot requests need not pay (a third of the edge's cost).
        await self._edge(scope, receive, send)

    def _services(self) -> Services:
        svc: Services = self.state.services
        return svc


async def _start_producer(producer: AIOKafkaProducer) -> None:
    """Wait for the broker at start (it may come up after us) instead of crash-looping at once."""

    def warn(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("broker not reachable yet (%r); retrying", exc)

    try:
        await AsyncRetrying(
            stop=stop_after_attempt(_BROKER_START_ATTEMPTS),
            wait=wait_fixed(1),
            before_sleep=warn,
            reraise=True,
        )(producer.start)
    except Exception as exc:
        raise RuntimeError(
            f"broker unreachable after {_BROKER_START_ATTEMPTS} attempts: {exc!r}"
        ) from exc


async def _unauthorized(request: Request, __: Exception) -> Response:
    lang = negotiate(request.headers.get("accept-language"))
    response = refusal(401, "UNAUTHORIZED", lang, key="UNAUTHORIZED.admin")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def _healthz() -> Response:
    return PlainTextResponse("ok")


async def _readyz(request: Request) -> Response:
    svc: Services = request.app.state.services
    redis_ok, broker_ok = await asyncio.gather(svc.redis_ready(), svc.broker_ready())
    status = 200 if redis_ok and broker_ok else 503
    return json_response({"redis": redis_ok, "broker": broker_ok}, status)


def _metrics_endpoint(multiprocess: bool) -> Callable[[], Awaitable[Response]]:
    """With several uvicorn workers, merge every worker's samples (PROMETHEUS_MULTIPROC_DIR)."""

    async def metrics_endpoint() -> Response:
        if multiprocess:
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return metrics_endpoint
