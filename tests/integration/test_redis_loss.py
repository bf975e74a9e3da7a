"""Redis is a cache: when it loses a coupon the gate is rebuilt, and PostgreSQL holds the line."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime

from app.adapters import redis_client
from app.adapters.kafka import Publisher, make_producer
from app.adapters.redis_gate import RedisGate
from app.domain.codec import IssueRequest
from tests.stack import Stack


async def _flush_namespace(stack: Stack, coupon_id: str) -> int:
    """FLUSHDB for this stack's keys only (other tests share the Redis server); on a cluster,
    SCAN walks every primary. Checks the coupon's gate is gone."""
    client = redis_client.connect(stack.settings)
    keys = [k async for k in client.scan_iter(match=f"{stack.settings.redis_prefix}:*")]
    if keys:
        await client.delete(*keys)  # on a cluster: one DEL per slot
    assert not await RedisGate(client, stack.settings.redis_prefix).is_loaded(uuid.UUID(coupon_id))
    await client.aclose()
    return len(keys)


async def test_gate_is_rebuilt_from_postgres_after_redis_loses_it(
    stack_on_each_redis: Stack,
) -> None:
    stack = stack_on_each_redis
    coupon_id = await stack.create_coupon(50)
    first_wave = [f"first-{i}" for i in range(40)]
    answers = await asyncio.gather(*(stack.request_issue(coupon_id, u) for u in first_wave))
    assert all(a.status_code == 202 for a in answers)
    await stack.wait_processed(coupon_id, 40)

    assert await _flush_namespace(stack, coupon_id) > 0

    second_wave = first_wave + [f"second-{i}" for i in range(60)]
    answers = await asyncio.gather(*(stack.request_issue(coupon_id, u) for u in second_wave))
    statuses = Counter(a.status_code for a in answers)
    # Rebuilt from the 40 holders: they are duplicates, 10 new users fit, 50 are sold out.
    assert statuses == Counter({409: 40, 202: 10, 410: 50})
    await stack.wait_processed(coupon_id, 50)
    assert await stack.outcomes(coupon_id) == {"ISSUED": 50}


async def test_database_refuses_over_issue_and_duplicates_when_the_gate_is_bypassed(
    shared_stack: Stack,
) -> None:
    """Messages that no gate checked (Redis wrong or bypassed): stock and uniqueness still hold."""
    stack = shared_stack
    coupon_id = await stack.create_coupon(5)
    producer = make_producer(stack.settings.kafka_bootstrap, linger_ms=5, timeout_ms=10_000)
    await producer.start()
    publisher = Publisher(producer, stack.settings.topic, timeout_s=10)
    users = ["same"] * 10 + [f"other-{i}" for i in range(20)]
    now = datetime.now(UTC)
    requests = [IssueRequest(uuid.UUID(coupon_id), u, uuid.uuid4(), now) for u in users]
    await asyncio.gather(*(publisher.publish(r) for r in requests))
    await publisher.publish(requests[-1])  # a redelivery of the same request id
    await producer.stop()

    await stack.wait_processed(coupon_id, len(requests))
    outcomes = await stack.outcomes(coupon_id)
    assert outcomes["ISSUED"] == 5
    assert sum(outcomes.values()) == len(requests)  # the redelivery added no row
    assert outcomes.get("DUPLICATE", 0) >= 0 and set(outcomes) <= {
        "ISSUED",
        "DUPLICATE",
        "SOLD_OUT",
    }
    issued_users = await stack.pool.fetch(
        "SELECT user_id FROM issue_requests WHERE coupon_id = $1 AND status = 'ISSUED'",
        uuid.UUID(coupon_id),
    )
    assert len({r["user_id"] for r in issued_users}) == 5
