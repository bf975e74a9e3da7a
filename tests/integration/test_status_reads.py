"""Status reads during a sale come from Redis: no PostgreSQL, a long-poll, and repairs."""

from __future__ import annotations

import asyncio
import time
import uuid

from app.adapters import redis_client
from app.adapters.redis_gate import RedisGate
from app.reconciler.reconcile import reconcile_once
from harness import wait_until
from tests.stack import Stack, holding_coupon_rows

DB_READS = ("gate", "registry", "status")


def _db_reads(metrics: dict[str, float]) -> float:
    return sum(metrics.get(f'coupon_gate_db_reads_total{{purpose="{p}"}}', 0.0) for p in DB_READS)


async def _status(stack: Stack, coupon: str, user: str, wait: float = 0) -> dict[str, str]:
    assert stack.http is not None
    r = await stack.http.get(f"/api/coupons/{coupon}/issues/{user}", params={"waitSeconds": wait})
    assert r.status_code in (200, 404), r.text
    return dict(r.json())


async def test_polling_a_sale_never_reads_postgres(shared_stack: Stack) -> None:
    stack = shared_stack
    coupon = await stack.create_coupon(3)
    pressed = {
        f"poll-{i}": (await stack.request_issue(coupon, f"poll-{i}")).status_code for i in range(5)
    }
    assert sorted(pressed.values()) == [202, 202, 202, 410, 410]
    await stack.wait_processed(coupon, 3)
    before = await stack.api_metrics()
    users = [f"poll-{i % 5}" for i in range(300)]
    answers = await asyncio.gather(*(_status(stack, coupon, u) for u in users))
    after = await stack.api_metrics()
    assert _db_reads(after) == _db_reads(before)
    for user, answer in zip(users, answers, strict=True):
        expected = "ISSUED" if pressed[user] == 202 else None  # refused at the gate: never asked
        assert answer.get("status") == expected, (user, answer)


async def test_a_long_poll_returns_as_soon_as_the_outcome_is_recorded(
    stack_on_each_redis: Stack,
) -> None:
    stack = stack_on_each_redis
    coupon = await stack.create_coupon(5)
    async with holding_coupon_rows(stack, [coupon]):  # the consumer cannot issue meanwhile
        assert (await stack.request_issue(coupon, "waiter")).status_code == 202
        short = await _status(stack, coupon, "waiter", wait=0.5)
        assert short["status"] == "PENDING"
        started = time.monotonic()
        poll = asyncio.create_task(_status(stack, coupon, "waiter", wait=25))

        async def polling() -> bool:  # the long-poll is waiting inside the API before the lock goes
            found = await stack.api_metrics()
            # in flight: the long-poll and this scrape; waiting: the long-poll alone
            return (
                found.get("coupon_api_requests_in_flight", 0) >= 2
                and found.get("coupon_api_long_polls_waiting") == 1
            )

        await wait_until(polling, 10, "the long-poll to be waiting")
    answer = await poll
    assert answer["status"] == "ISSUED"
    assert time.monotonic() - started < 25  # woken by the outcome, not by its deadline
    assert (await stack.api_metrics()).get("coupon_api_long_polls_waiting") == 0


async def test_status_survives_redis_losing_the_coupon(stack_on_each_redis: Stack) -> None:
    stack = stack_on_each_redis
    coupon = await stack.create_coupon(5)
    assert (await stack.request_issue(coupon, "kept")).status_code == 202
    await stack.wait_processed(coupon, 1)
    client = redis_client.connect(stack.settings)
    gate = RedisGate(client, stack.settings.redis_prefix)
    cid = uuid.UUID(coupon)
    await client.delete(*gate.keys(cid), gate.outcomes_key(cid))
    before = await stack.api_metrics()
    assert (await _status(stack, coupon, "kept"))["status"] == "ISSUED"
    assert (await _status(stack, coupon, "kept"))["status"] == "ISSUED"
    after = await stack.api_metrics()
    key = 'coupon_gate_db_reads_total{purpose="gate"}'
    assert after[key] - before[key] == 1  # rebuilt once, then answered from Redis

    # An outcome the consumer could not write to Redis is repaired by the reconciler.
    await client.hdel(gate.outcomes_key(cid), "kept")
    assert (await _status(stack, coupon, "kept"))["status"] == "PENDING"  # holder, no outcome
    await reconcile_once(stack.settings, confirm_after_s=0.1)
    assert await client.hget(gate.outcomes_key(cid), "kept") is not None
    await client.aclose()
    assert (await _status(stack, coupon, "kept"))["status"] == "ISSUED"


async def test_the_fast_path_and_the_route_answer_alike(shared_stack: Stack) -> None:
    stack = shared_stack
    assert stack.http is not None
    coupon = await stack.create_coupon(5)
    assert (await stack.request_issue(coupon, "alike")).status_code == 202
    await stack.wait_processed(coupon, 1)
    for user in ("alike", "nobody"):
        url = f"/api/coupons/{coupon}/issues/{user}"
        fast = await stack.http.get(url, params={"waitSeconds": "0"})
        # an extra query parameter is not the fast path's: the FastAPI route answers it
        routed = await stack.http.get(url, params={"waitSeconds": "0", "via": "route"})
        assert (fast.status_code, fast.json()) == (routed.status_code, routed.json())
    bad = await stack.http.get(f"/api/coupons/{coupon}/issues/alike", params={"waitSeconds": 99})
    assert bad.status_code == 422 and bad.json()["reason"] == "VALIDATION"
