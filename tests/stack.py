"""Test helpers on top of the shared harness: a Stack with an HTTP client, its database pool
and the assertions tests make about it. Settings isolation, process spawning and the poll-until
loop are the harness's (``harness/``), shared with the bench."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
import pytest
import pytest_asyncio

from app.adapters.postgres_setup import consumer_connection_name
from app.config import Settings
from app.local.kafka import KafkaNode
from app.local.stack import prepare
from harness import ServiceProcesses, create_covering, isolated, scrape, wait_until
from harness.coupons import coupon_body
from tests.servers import database_url, redis_url


def isolated_settings(bootstrap: str, **overrides: Any) -> Settings:
    """Settings no other test shares, on the session's PostgreSQL and Redis (tests/servers.py)."""
    base = Settings(kafka_bootstrap=bootstrap, database_url=database_url(), redis_url=redis_url())
    return isolated(base, "t", retry_backoff_ms=20, **overrides)


@dataclass
class Stack(ServiceProcesses):
    """The harness's API and N consumers, with a test client and a pool on their schema."""

    http: httpx.AsyncClient | None = None
    _pool: asyncpg.Pool | None = None

    async def start(self, consumers: int) -> Stack:
        await asyncio.to_thread(prepare, self.settings)
        self.start_api()
        for _ in range(consumers):
            self.add_consumer()
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            # A request waits for a free connection as long as it takes (a sale gathers more
            # requests than the pool has connections; under CPU contention the queue is long),
            # but a server that does not answer a request it was sent fails it after 30 s.
            timeout=httpx.Timeout(30, pool=None),
            # Idle connections are dropped before uvicorn closes them (5 s keep-alive): reusing
            # one the server is closing at that moment fails the request with a ReadError.
            limits=httpx.Limits(max_connections=100, keepalive_expiry=2),
        )
        await self.wait_api_ready()
        await self.open_pool()
        if consumers:
            await self.wait_for_assignment(consumers)
        return self

    async def open_pool(self) -> None:
        """The test's own small pool on the stack's schema (``pool``)."""
        self._pool = await asyncpg.create_pool(
            self.settings.database_url,
            min_size=1,
            max_size=4,
            server_settings={"search_path": self.settings.db_schema},
        )

    async def api_metrics(self) -> dict[str, float]:
        """The API process's /metrics, flattened (see ``scrape``)."""
        assert self.http is not None
        return scrape((await self.http.get("/metrics")).text)

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None
        return self._pool

    async def create_coupon(self, total: int, **overrides: Any) -> str:
        assert self.http is not None
        body = coupon_body(total, "flash sale", **overrides)
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
        await asyncio.to_thread(self.terminate)
        if self.http:
            await self.http.aclose()
        if self._pool:
            await self._pool.close()


@contextlib.asynccontextmanager
async def stack_with_own_broker(
    log_dir: Path, consumers: int, **overrides: Any
) -> AsyncIterator[tuple[Stack, KafkaNode]]:
    """A stack on an Apache Kafka node of its own, for scenarios that stop, stall, kill or
    restart the broker (it restarts from its log dirs)."""
    broker = KafkaNode(log_dir / "kafka").start()  # in this thread: it dies with its starter
    stack = await Stack(isolated_settings(broker.bootstrap, **overrides), log_dir).start(consumers)
    try:
        yield stack, broker
    finally:
        await stack.stop()
        broker.stop()


def own_broker_fixture(name: str, consumers: int, **overrides: Any) -> Any:
    """A test-scoped fixture ``name``: ``stack_with_own_broker`` in the test's tmp_path."""

    @pytest_asyncio.fixture(name=name, loop_scope="session")
    async def fixture(tmp_path: Path) -> AsyncIterator[tuple[Stack, KafkaNode]]:
        async with stack_with_own_broker(tmp_path, consumers, **overrides) as pair:
            yield pair

    return fixture


async def coupons_on_every_partition(stack: Stack, total: int) -> list[str]:
    """Create coupons of ``total`` stock until every partition of the topic holds one."""
    return await create_covering(lambda: stack.create_coupon(total), stack.settings.partitions)


async def consumers_waiting_on_locks(stack: Stack) -> int:
    """How many of this stack's consumer connections are blocked on a row lock right now."""
    n = await stack.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        " AND wait_event_type = 'Lock'",
        consumer_connection_name(stack.settings.consumer_group),
    )
    return int(n)


@contextlib.asynccontextmanager
async def holding_coupon_rows(stack: Stack, coupon_ids: Sequence[str]) -> AsyncIterator[None]:
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


async def refuse_poison_users(pool: asyncpg.Pool, schema: str) -> None:
    """A real failure inside the issue transaction, for users named ``poison...`` only: a trigger
    that refuses their row (a message's own fault, not the database's)."""
    await refuse_users(pool, schema, "poison")


async def refuse_users(
    pool: asyncpg.Pool, schema: str, prefix: str, sqlstate: str = "P0001"
) -> None:
    """A trigger refusing the rows of users named ``prefix...`` with ``sqlstate``: the default
    (raise_exception) is the message's own fault; an infrastructure code (say 25006, read-only
    as after a failover) stalls the partition until :func:`accept_users` drops the trigger."""
    assert prefix.isalnum() and re.fullmatch(r"[0-9A-Z]{5}", sqlstate), (prefix, sqlstate)
    await pool.execute(
        f"""
        CREATE OR REPLACE FUNCTION "{schema}".refuse_{prefix}() RETURNS trigger AS $$
        BEGIN
          IF NEW.user_id LIKE '{prefix}%' THEN
            RAISE EXCEPTION 'refused by test trigger' USING ERRCODE = '{sqlstate}';
          END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER refuse_{prefix} BEFORE INSERT ON "{schema}".issue_requests
          FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse_{prefix}();
        """
    )


Scope = Literal["session", "module"]


def stack_fixture(
    name: str, doc: str, *, scope: Scope = "session", consumers: int = 3, **overrides: Any
) -> Any:
    """A fixture ``name`` of ``scope``: an API and ``consumers`` consumers on a topic, schema,
    Redis prefix and group of their own (and ``overrides``), on the session's broker."""

    @pytest_asyncio.fixture(name=name, scope=scope, loop_scope="session")
    async def fixture(
        kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
    ) -> AsyncIterator[Stack]:
        settings = isolated_settings(kafka_bootstrap, **overrides)
        stack = await Stack(settings, Path(tmp_path_factory.mktemp(name))).start(consumers)
        yield stack
        await stack.stop()

    fixture.__doc__ = doc
    return fixture


async def accept_users(pool: asyncpg.Pool, schema: str, prefix: str) -> None:
    """Drop :func:`refuse_users`' trigger: those users' rows are written again."""
    await pool.execute(f'DROP TRIGGER refuse_{prefix} ON "{schema}".issue_requests')
