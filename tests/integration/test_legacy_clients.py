"""The Java service's documented calls, replayed verbatim against the real stack: its clients
must keep working unchanged. They read ``success`` (boolean), ``message`` (String) and, on an
accepted press, ``queueSize`` (int); coupons carry numbers for money and a LocalDateTime-style
expiry. Korean messages, as the old service sent, with ``Accept-Language: ko``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.stack import Stack

# The old API documentation's create example (its date has passed since it was written).
DOCUMENTED_CREATE: dict[str, Any] = {
    "name": "신규 가입 쿠폰",
    "discountType": "PERCENT",
    "discountValue": 10,
    "totalQuantity": 100,
    "minOrderAmount": 10000,
    "expiresAt": "2025-12-31T23:59:59",
}
KOREAN = {"Accept-Language": "ko"}
ACCEPTED_KO = "쿠폰 발급 요청이 접수되었습니다. 순차적으로 처리됩니다."


def http(stack: Stack) -> httpx.AsyncClient:
    assert stack.http is not None
    return stack.http


def as_the_java_client_reads_it(body: dict[str, Any], *, accepted: bool) -> None:
    """Jackson into the client's DTO: boolean success, String message, Integer queueSize."""
    assert type(body["success"]) is bool and body["success"] is accepted
    assert type(body["message"]) is str and body["message"]
    if accepted:
        assert type(body["queueSize"]) is int and body["queueSize"] >= 0
    else:
        assert type(body["reason"]) is str  # ours, beside what the client reads


async def create_documented(stack: Stack, expires_at: str) -> httpx.Response:
    return await http(stack).post(
        "/api/coupons", json={**DOCUMENTED_CREATE, "expiresAt": expires_at}
    )


async def issue(stack: Stack, coupon_id: str, user: str) -> httpx.Response:
    return await http(stack).post(
        f"/api/coupons/{coupon_id}/issue/queue", json={"userId": user}, headers=KOREAN
    )


async def test_the_documented_create_is_accepted_as_written(shared_stack: Stack) -> None:
    # Verbatim: the zone-less date parses; it is refused only because it has passed.
    r = await http(shared_stack).post("/api/coupons", json=DOCUMENTED_CREATE)
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"field": "expiresAt", "message": "must be in the future"}]
    # The same call with a date still ahead, in the same LocalDateTime format.
    r = await create_documented(shared_stack, "2099-12-31T23:59:59")
    assert r.status_code == 201, r.text
    coupon = r.json()
    assert coupon["expiresAt"] == "2099-12-31T23:59:59Z"  # COUPON_DEFAULT_TIMEZONE=UTC here
    assert coupon["discountValue"] == 10 and type(coupon["discountValue"]) is float
    assert coupon["minOrderAmount"] == 10000 and type(coupon["minOrderAmount"]) is float
    assert (coupon["totalQuantity"], coupon["issuedQuantity"]) == (100, 0)


async def test_issue_for_user1_then_a_duplicate(shared_stack: Stack) -> None:
    coupon_id = (await create_documented(shared_stack, "2099-12-31T23:59:59")).json()["id"]
    first = await issue(shared_stack, coupon_id, "user1")
    assert first.status_code == 202
    as_the_java_client_reads_it(first.json(), accepted=True)
    assert first.json()["message"] == ACCEPTED_KO
    again = await issue(shared_stack, coupon_id, "user1")
    assert again.status_code == 409
    as_the_java_client_reads_it(again.json(), accepted=False)
    assert again.json()["reason"] == "DUPLICATE"
    assert again.json()["message"] == "이미 발급 요청한 쿠폰입니다."


async def test_100_concurrent_users_on_a_100_stock_coupon(shared_stack: Stack) -> None:
    coupon_id = (await create_documented(shared_stack, "2099-12-31T23:59:59")).json()["id"]
    answers = await asyncio.gather(
        *(issue(shared_stack, coupon_id, f"user{i}") for i in range(1, 101))
    )
    assert [a.status_code for a in answers] == [202] * 100
    for answer in answers:
        as_the_java_client_reads_it(answer.json(), accepted=True)
        assert answer.json()["message"] == ACCEPTED_KO
        assert answer.json()["queueSize"] < 100
    await shared_stack.wait_processed(coupon_id, 100)
    coupon = (await http(shared_stack).get(f"/api/coupons/{coupon_id}")).json()
    assert (coupon["issuedQuantity"], coupon["remainingQuantity"]) == (100, 0)
    late = await issue(shared_stack, coupon_id, "user101")
    assert late.status_code == 410
    as_the_java_client_reads_it(late.json(), accepted=False)
    assert late.json()["reason"] == "SOLD_OUT"
    assert await shared_stack.outcomes(coupon_id) == {"ISSUED": 100}
