"""PostgreSQL fails over to a read-only node mid-sale, then back: nothing is dead-lettered.

The consumers log in as their own role; the failover is ``default_transaction_read_only`` for
that role plus its sessions terminated (a failover drops connections, and the new ones land on a
node that refuses writes: SQLSTATE 25006). The partitions stall, show it (metric, readiness),
and everything accepted meanwhile is issued once the database takes writes again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio

from harness import wait_until
from tests.chaos.harness import Sale, dead_letters_for, record, run_verify, users
from tests.servers import database_url, database_url_as
from tests.stack import Stack, coupons_on_every_partition, isolated_settings

pytestmark = pytest.mark.slow
STALLED = "coupon_consumer_stalled_partitions"


@pytest_asyncio.fixture(loop_scope="session")
async def failover_stack(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[tuple[Stack, str]]:
    role = f"consumer_{uuid.uuid4().hex[:10]}"
    settings = isolated_settings(kafka_bootstrap)
    admin = await asyncpg.connect(database_url())
    await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    stack = Stack(settings, tmp_path)
    stack.consumer_env = {"COUPON_DATABASE_URL": database_url_as(role)}
    await stack.start(consumers=0)  # migrations first, then grant, then the consumers
    schema = settings.db_schema
    await admin.execute(
        f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}";'
        f' GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"'
    )
    for _ in range(3):
        stack.add_consumer()
    await stack.wait_for_assignment(3)
    yield stack, role
    await stack.stop()
    await admin.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')
    await admin.close()


async def _failover(stack: Stack, role: str, read_only: bool) -> None:
    setting = "SET default_transaction_read_only = on" if read_only else "RESET ALL"
    await stack.pool.execute(f'ALTER ROLE "{role}" {setting}')
    await stack.pool.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
    )


async def _stalled(stack: Stack) -> float:
    total = 0.0
    for i in stack.live_consumers():
        metrics = await stack.consumer_metrics(i) or {}
        total += metrics.get(STALLED, 0.0)
    return total


async def _any_not_ready(stack: Stack) -> bool:
    async with httpx.AsyncClient(timeout=2) as client:
        for i in stack.live_consumers():
            r = await client.get(f"http://127.0.0.1:{stack.consumer_ports[i]}/readyz")
            if r.status_code == 503:
                return True
    return False


async def test_read_only_failover_mid_sale_dead_letters_nothing(
    failover_stack: tuple[Stack, str], capsys: pytest.CaptureFixture[str]
) -> None:
    stack, role = failover_stack
    started = time.monotonic()
    sale = Sale(await coupons_on_every_partition(stack, 10_000))
    await sale.wave(stack, users("before", 30))
    await sale.drain(stack)

    await _failover(stack, role, read_only=True)
    await sale.wave(stack, users("during", 60))  # the API still admits: it needs no writes

    async def every_partition_stalled() -> bool:
        return await _stalled(stack) >= stack.settings.partitions

    await wait_until(every_partition_stalled, 60, "every partition to stall on the read-only DB")
    assert await _any_not_ready(stack)
    processed_while_read_only = sum([await stack.processed(c) for c in sale.coupons])

    await _failover(stack, role, read_only=False)
    await sale.drain(stack, timeout=120)

    async def recovered() -> bool:
        return await _stalled(stack) == 0

    await wait_until(recovered, 30, "the stalled gauge back to 0")
    for coupon in sale.coupons:
        assert await stack.outcomes(coupon) == {"ISSUED": len(sale.accepted_users[coupon])}
    assert processed_while_read_only == 30 * len(sale.coupons)
    assert await dead_letters_for(stack.settings, sale.coupons) == 0
    report = await run_verify(stack.settings)
    record(capsys, "database-read-only-failover", sale, report, started)
