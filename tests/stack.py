"""Test helpers: isolated settings, the real processes of a stack, and condition polling."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.adapters.kafka import partition_for
from app.adapters.postgres import consumer_connection_name
from app.config import Settings
from app.devstack import ManagedProcess, TansuBroker, child_env, free_port, prepare, spawn

T = TypeVar("T")
DATABASE_URL = "postgresql://127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def isolated_settings(bootstrap: str, **overrides: Any) -> Settings:
    """Settings no other test shares: own schema, Redis prefix, topics, group and ports."""
    tag = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "database_url": DATABASE_URL,
        "redis_url": REDIS_URL,
        "db_schema": f"t_{tag}",
        "redis_prefix": f"t:{tag}",
        "topic": f"requests-{tag}",
        "dlq_topic": f"requests-{tag}.dlq",
        "consumer_group": f"group-{tag}",
        "api_host": "127.0.0.1",
        "api_port": free_port(),
        "consumer_metrics_port": free_port(),
        "retry_backoff_ms": 20,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


async def wait_until(
    condition: Callable[[], Awaitable[T]], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await condition()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def scrape(text: str) -> dict[str, float]:
    """Flatten an exposition into {'name{label="v",...}': value}."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


@dataclass
class Stack:
    """The real processes of one isolated deployment: an API and N consumers."""

    settings: Settings
    log_dir: Path
    api: ManagedProcess | None = None
    consumers: list[ManagedProcess] = field(default_factory=list)
    consumer_ports: list[int] = field(default_factory=list)
    http: httpx.AsyncClient | None = None
    process_env: dict[str, str] = field(default_factory=dict)  # extra env of every process
    consumer_env: dict[str, str] = field(default_factory=dict)  # extra env of the consumers only
    _pool: asyncpg.Pool | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    async def start(self, consumers: int) -> Stack:
        await asyncio.to_thread(prepare, self.settings)
        self.api = self._spawn("api", ["api"], {})
        for _ in range(consumers):
            self.add_consumer()
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=30,
            # Idle connections are dropped before uvicorn closes them (5 s keep-alive): reusing
            # one the server is closing at that moment fails the request with a ReadError.
            limits=httpx.Limits(max_connections=100, keepalive_expiry=2),
        )
        await wait_until(self._api_ready, 60, "the API to be ready")
        self._pool = await asyncpg.create_pool(
            self.settings.database_url,
            min_size=1,
            max_size=4,
            server_settings={"search_path": self.settings.db_schema},
        )
        if consumers:
            await self.wait_for_assignment(consumers)
        return self

    def _spawn(self, name: str, args: list[str], extra: dict[str, str]) -> ManagedProcess:
        env = child_env(self.settings, {**self.process_env, **extra})
        return spawn(name, args, env, self.log_dir / f"{name}.log")

    def add_consumer(self) -> ManagedProcess:
        port = free_port()
        proc = self._spawn(
            f"consumer-{len(self.consumers)}",
            ["consumer"],
            {**self.consumer_env, "COUPON_CONSUMER_METRICS_PORT": str(port)},
        )
        self.consumers.append(proc)
        self.consumer_ports.append(port)
        return proc

    async def _api_ready(self) -> bool:
        assert self.http is not None
        if self.api is not None and self.api.popen.poll() is not None:
            raise AssertionError(f"the API exited with {self.api.popen.returncode}")
        try:
            return (await self.http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    async def api_metrics(self) -> dict[str, float]:
        """The API process's /metrics, flattened (see ``scrape``)."""
        assert self.http is not None
        return scrape((await self.http.get("/metrics")).text)

    async def consumer_metrics(self, index: int) -> dict[str, float] | None:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                r = await client.get(f"http://127.0.0.1:{self.consumer_ports[index]}/metrics")
            return scrape(r.text)
        except httpx.TransportError:
            return None

    async def wait_for_assignment(self, expected_members: int, timeout: float = 60) -> None:
        """Wait until the live consumers own every partition between them, each at least one."""
        partitions = self.settings.partitions

        async def balanced() -> bool:
            owned = []
            for i, proc in enumerate(self.consumers):
                if proc.popen.poll() is not None:
                    continue
                m = await self.consumer_metrics(i)
                owned.append(int(m.get("coupon_consumer_assigned_partitions", 0)) if m else 0)
            live = len(owned) == expected_members
            return live and sum(owned) == partitions and min(owned) >= 1

        await wait_until(balanced, timeout, f"{expected_members} consumers to share the partitions")

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None
        return self._pool

    async def create_coupon(self, total: int, **overrides: Any) -> str:
        assert self.http is not None
        body = {
            "name": "flash sale",
            "discountType": "FIXED",
            "discountValue": 1000,
            "totalQuantity": total,
            "minOrderAmount": 0,
            "expiresAt": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            **overrides,
        }
        r = await self.http.post("/api/coupons", json=body, headers=self.admin_headers())
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def admin_headers(self) -> dict[str, str]:
        token = self.settings.admin_token
        return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}

    async def request_issue(self, coupon_id: str, user_id: str) -> httpx.Response:
        assert self.http is not None
        return await self.http.post(
            f"/api/coupons/{coupon_id}/issue/queue", json={"userId": user_id}
        )

    async def outcomes(self, coupon_id: str) -> dict[str, int]:
        rows = await self.pool.fetch(
            "SELECT coalesce(reason, status) AS outcome, count(*) AS n FROM issue_requests"
            " WHERE coupon_id = $1 GROUP BY 1",
            uuid.UUID(coupon_id),
        )
        return {r["outcome"]: r["n"] for r in rows}

    async def processed(self, coupon_id: str) -> int:
        return sum((await self.outcomes(coupon_id)).values())

    async def wait_processed(self, coupon_id: str, expected: int, timeout: float = 60) -> None:
        async def done() -> bool:
            return await self.processed(coupon_id) >= expected

        await wait_until(done, timeout, f"{expected} processed requests of coupon {coupon_id}")

    async def stop(self) -> None:
        for proc in self.consumers:
            proc.stop()
        if self.api:
            self.api.stop()
        if self.http:
            await self.http.aclose()
        if self._pool:
            await self._pool.close()


@contextlib.asynccontextmanager
async def stack_with_own_broker(
    log_dir: Path, consumers: int, **overrides: Any
) -> AsyncIterator[tuple[Stack, TansuBroker]]:
    """A stack on a broker of its own, for scenarios that stop, stall or restart the broker."""
    broker = TansuBroker().start()
    stack = await Stack(isolated_settings(broker.bootstrap, **overrides), log_dir).start(consumers)
    try:
        yield stack, broker
    finally:
        await stack.stop()
        broker.stop()


def partition_of(coupon_id: str, partitions: int) -> int:
    """The partition the producer's default partitioner picks for a coupon id key."""
    return partition_for(coupon_id.encode(), partitions)


async def coupons_on_every_partition(stack: Stack, total: int) -> list[str]:
    """Create coupons until every partition of the topic holds at least one."""
    by_partition: dict[int, str] = {}
    for _ in range(50):
        coupon_id = await stack.create_coupon(total)
        by_partition.setdefault(partition_of(coupon_id, stack.settings.partitions), coupon_id)
        if len(by_partition) == stack.settings.partitions:
            return list(by_partition.values())
    raise AssertionError("could not cover every partition with 50 coupons")


async def consumers_waiting_on_locks(stack: Stack) -> int:
    """How many of this stack's consumer connections are blocked on a row lock right now."""
    n = await stack.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        " AND wait_event_type = 'Lock'",
        consumer_connection_name(stack.settings.consumer_group),
    )
    return int(n)


@contextlib.asynccontextmanager
async def holding_coupon_rows(stack: Stack, coupon_ids: list[str]) -> AsyncIterator[None]:
    """A slow database: hold the coupons' rows locked, so every batch touching them waits."""
    async with stack.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(
                "SELECT id FROM coupons WHERE id = ANY($1::uuid[]) FOR UPDATE",
                [uuid.UUID(c) for c in coupon_ids],
            )
            yield
        finally:
            await tx.rollback()
