"""The flash sale: 100 coupons, 1,000 users plus 200 repeat presses, all at once, over HTTP; on
one Redis and on a Redis Cluster."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter

import pytest

from tests.stack import Stack

STOCK = 100
USERS = 1000
REPEATS = 200


async def test_flash_sale_issues_exactly_the_stock_once_per_user(
    stack_on_each_redis: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = stack_on_each_redis
    coupon_id = await stack.create_coupon(STOCK)
    users = [f"user-{i}" for i in range(USERS)]
    presses = users + random.Random(7).sample(users, REPEATS)
    random.Random(8).shuffle(presses)

    started, client_cpu = time.perf_counter(), time.process_time()
    responses = await asyncio.gather(*(stack.request_issue(coupon_id, u) for u in presses))
    api_seconds = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu

    by_status = Counter(r.status_code for r in responses)
    accepted = [
        (u, r.json()) for u, r in zip(presses, responses, strict=True) if r.status_code == 202
    ]
    assert by_status[202] == STOCK, by_status
    assert by_status[409] + by_status[410] == len(presses) - STOCK, by_status
    assert set(by_status) <= {202, 409, 410}, by_status
    for _, body in accepted:
        assert body["success"] is True and body["queueSize"] >= 0 and uuid.UUID(body["requestId"])
    assert len({u for u, _ in accepted}) == STOCK, "a user was accepted twice"

    drain_started = time.perf_counter()
    await stack.wait_processed(coupon_id, STOCK)
    drain_seconds = time.perf_counter() - drain_started

    assert await stack.outcomes(coupon_id) == {"ISSUED": STOCK}
    holders = await stack.pool.fetch(
        "SELECT user_id FROM issue_requests WHERE coupon_id = $1 AND status = 'ISSUED'",
        uuid.UUID(coupon_id),
    )
    assert sorted(r["user_id"] for r in holders) == sorted(u for u, _ in accepted)
    coupon = (await stack.http.get(f"/api/coupons/{coupon_id}")).json()  # type: ignore[union-attr]
    assert (coupon["issuedQuantity"], coupon["remainingQuantity"]) == (STOCK, 0)
    some_user = accepted[0][0]
    status = (
        await stack.http.get(  # type: ignore[union-attr]
            f"/api/coupons/{coupon_id}/issues/{some_user}", params={"waitSeconds": 10}
        )
    ).json()
    assert status["status"] == "ISSUED" and status["issuedAt"]

    with capsys.disabled():
        print(
            f"\n[flash sale, {'Redis Cluster' if stack.settings.redis_cluster else 'Redis'}]"
            f" {len(presses)} presses answered in {api_seconds:.2f}s"
            f" ({len(presses) / api_seconds:.0f} req/s; bound by this test's httpx client, which"
            f" spent {client_cpu / len(presses) * 1000:.1f} ms of CPU per request: `make bench`"
            " measures the API);"
            f" {STOCK} issued; last issue {drain_seconds:.2f}s after the last answer"
        )


async def test_requests_beyond_stock_are_refused_as_sold_out_and_status_reads_back(
    stack_on_each_redis: Stack,
) -> None:
    stack = stack_on_each_redis
    coupon_id = await stack.create_coupon(2)
    answers = [await stack.request_issue(coupon_id, u) for u in ("ann", "bob", "cid", "ann")]
    assert [a.status_code for a in answers] == [202, 202, 410, 409]
    assert [a.json()["reason"] for a in answers[2:]] == ["SOLD_OUT", "DUPLICATE"]
    assert answers[1].json()["queueSize"] in (0, 1)
    await stack.wait_processed(coupon_id, 2)
    http = stack.http
    assert http is not None
    # The row is committed before the consumer writes the outcome to Redis: a long-poll waits
    # for that write instead of racing it.
    bob = await http.get(f"/api/coupons/{coupon_id}/issues/bob", params={"waitSeconds": 10})
    assert bob.json()["status"] == "ISSUED"
    never = await http.get(f"/api/coupons/{coupon_id}/issues/cid")
    assert never.status_code == 404
