"""The gate under the faults of a sale: retries, cold gates, unknown ids, bursts, a failing DB."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import redis.asyncio as aioredis

from app.adapters.redis_gate import RedisGate
from app.domain.outcomes import GateOutcome
from app.verify import verify
from tests.servers import redis_url
from tests.stack import Stack

NOW = datetime.now(UTC)


async def _gate() -> tuple[RedisGate, aioredis.Redis]:
    client = aioredis.from_url(redis_url())
    return RedisGate(client, f"t:{uuid.uuid4().hex[:10]}"), client


async def test_a_retried_press_gets_its_reservation_back_never_a_429() -> None:
    gate, client = await _gate()
    coupon, first, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        await gate.load(coupon, 5, NOW + timedelta(hours=1), holders=())
        assert (await gate.reserve(coupon, "u", first, NOW, 1)).outcome is GateOutcome.ACCEPTED
        # The same request again (its reply was lost): still accepted, although over the limit.
        assert (await gate.reserve(coupon, "u", first, NOW, 1)).outcome is GateOutcome.ACCEPTED
        # A new request of the same user in the same second is what the limit is for.
        answer = await gate.reserve(coupon, "u", other, NOW, 1)
        assert answer.outcome is GateOutcome.RATE_LIMITED
    finally:
        await client.aclose()


async def test_a_press_on_a_cold_gate_counts_once() -> None:
    gate, client = await _gate()
    coupon, request = uuid.uuid4(), uuid.uuid4()
    try:
        assert not (await gate.reserve(coupon, "u", request, NOW, 1)).loaded
        await gate.load(coupon, 5, NOW + timedelta(hours=1), holders=())
        assert (await gate.reserve(coupon, "u", request, NOW, 1)).outcome is GateOutcome.ACCEPTED
    finally:
        await client.aclose()


def _delta(before: dict[str, float], after: dict[str, float], sample: str) -> float:
    return after.get(sample, 0.0) - before.get(sample, 0.0)


GATE_READS = 'coupon_gate_db_reads_total{purpose="gate"}'
REGISTRY_READS = 'coupon_gate_db_reads_total{purpose="registry"}'
REBUILDS = "coupon_gate_rebuilds_total"


async def test_unknown_coupon_ids_are_refused_without_postgres(shared_stack: Stack) -> None:
    stack = shared_stack
    before = await stack.api_metrics()
    answers = await asyncio.gather(
        *(stack.request_issue(str(uuid.uuid4()), f"u{i}") for i in range(300))
    )
    assert {a.status_code for a in answers} == {404}
    assert {a.json()["reason"] for a in answers} == {"NOT_FOUND"}
    after = await stack.api_metrics()
    assert _delta(before, after, GATE_READS) == 0
    assert _delta(before, after, REGISTRY_READS) == 0


async def test_presses_on_a_lost_gate_rebuild_it_once(shared_stack: Stack) -> None:
    stack = shared_stack
    coupon = await stack.create_coupon(1000)
    client = aioredis.from_url(redis_url())
    gate = RedisGate(client, stack.settings.redis_prefix)
    await client.delete(*gate.keys(uuid.UUID(coupon)))
    before = await stack.api_metrics()
    answers = await asyncio.gather(*(stack.request_issue(coupon, f"cold-{i}") for i in range(90)))
    after = await stack.api_metrics()
    await client.aclose()
    assert [a.status_code for a in answers] == [202] * 90
    assert _delta(before, after, REBUILDS) == 1
    assert _delta(before, after, GATE_READS) == 1
    await stack.wait_processed(coupon, 90)


async def test_512_concurrent_presses_queue_for_redis_and_get_no_5xx(shared_stack: Stack) -> None:
    stack = shared_stack
    coupon = await stack.create_coupon(10_000)
    limits = httpx.Limits(max_connections=600, max_keepalive_connections=600)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, limits=limits) as http:
        answers = await asyncio.gather(
            *(
                http.post(f"/api/coupons/{coupon}/issue/queue", json={"userId": f"burst-{i}"})
                for i in range(512)
            )
        )
    codes = [a.status_code for a in answers]
    assert [c for c in codes if c >= 500] == []
    assert codes == [202] * 512
    await stack.wait_processed(coupon, 512)
    report = await verify(stack.settings, uuid.UUID(coupon))
    assert report.ok and report.coupons[0].issued_quantity == 512, report.violations


async def test_a_database_fault_answers_503_in_the_failure_shape(shared_stack: Stack) -> None:
    stack = shared_stack
    coupon = await stack.create_coupon(10)
    assert (await stack.request_issue(coupon, "before")).status_code == 202
    client = aioredis.from_url(redis_url())
    gate = RedisGate(client, stack.settings.redis_prefix)
    schema = stack.settings.db_schema
    await client.delete(*gate.keys(uuid.UUID(coupon)))  # a cold gate must read PostgreSQL
    await stack.pool.execute(f'ALTER TABLE "{schema}".failed_requests RENAME TO fr_away')
    await stack.pool.execute(f'ALTER TABLE "{schema}".coupons RENAME TO coupons_away')
    try:
        assert stack.http is not None
        answers = [
            await stack.request_issue(coupon, "during"),
            await stack.http.get(f"/api/coupons/{coupon}"),
            await stack.http.get(f"/api/coupons/{coupon}/issues/before"),
        ]
    finally:
        await stack.pool.execute(f'ALTER TABLE "{schema}".coupons_away RENAME TO coupons')
        await stack.pool.execute(f'ALTER TABLE "{schema}".fr_away RENAME TO failed_requests')
        await client.aclose()
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert body["success"] is False and body["reason"] == "DATABASE_UNAVAILABLE", body
    assert (await stack.request_issue(coupon, "after")).status_code == 202
    await stack.wait_processed(coupon, 2)
