"""The REST contract: shapes, validation messages per field, and status codes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from harness import wait_until
from tests.stack import Stack

FUTURE = (datetime.now(UTC) + timedelta(days=1)).isoformat()
VALID: dict[str, Any] = {
    "name": "spring sale",
    "discountType": "PERCENT",
    "discountValue": 15,
    "totalQuantity": 100,
    "minOrderAmount": 10000,
    "expiresAt": FUTURE,
}


def http(stack: Stack) -> httpx.AsyncClient:
    assert stack.http is not None
    return stack.http


async def test_create_then_read_coupon_with_remaining_stock(shared_stack: Stack) -> None:
    created = await http(shared_stack).post("/api/coupons", json=VALID)
    assert created.status_code == 201
    body = created.json()
    uuid.UUID(body["id"])
    assert body["name"] == "spring sale" and body["discountType"] == "PERCENT"
    read = (await http(shared_stack).get(f"/api/coupons/{body['id']}")).json()
    assert read["totalQuantity"] == 100
    assert (read["issuedQuantity"], read["remainingQuantity"]) == (0, 100)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "x" * 101),
        ("discountType", "BOGO"),
        ("discountValue", 0),
        ("discountValue", 101),  # PERCENT at most 100
        ("totalQuantity", 0),
        ("totalQuantity", 10_000_001),
        ("minOrderAmount", -1),
        ("expiresAt", "2020-01-01T00:00:00Z"),
        ("expiresAt", "not a date"),
    ],
)
async def test_each_bad_field_is_a_422_naming_the_field(
    shared_stack: Stack, field: str, value: object
) -> None:
    r = await http(shared_stack).post("/api/coupons", json={**VALID, field: value})
    assert r.status_code == 422
    body = r.json()
    assert body["success"] is False and body["reason"] == "VALIDATION"
    assert [e["field"] for e in body["errors"]] == [field]
    assert field in body["message"]


async def test_missing_and_unknown_fields_are_422(shared_stack: Stack) -> None:
    missing = {k: v for k, v in VALID.items() if k != "totalQuantity"}
    r = await http(shared_stack).post("/api/coupons", json=missing)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "totalQuantity"
    r = await http(shared_stack).post("/api/coupons", json={**VALID, "owner": "me"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "owner"


@pytest.mark.parametrize("user_id", ["", "x" * 65, "has space", "semi;colon", "newline\n"])
async def test_bad_user_ids_are_422(shared_stack: Stack, user_id: str) -> None:
    coupon_id = await shared_stack.create_coupon(1)
    r = await shared_stack.request_issue(coupon_id, user_id)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "userId"


async def test_unknown_coupon_is_404_everywhere(shared_stack: Stack) -> None:
    unknown = str(uuid.uuid4())
    assert (await http(shared_stack).get(f"/api/coupons/{unknown}")).status_code == 404
    r = await shared_stack.request_issue(unknown, "someone")
    assert r.status_code == 404 and r.json()["reason"] == "NOT_FOUND"
    # twice: the second answer comes from the short-lived "known missing" mark in Redis
    assert (await shared_stack.request_issue(unknown, "someone")).status_code == 404
    assert (
        await http(shared_stack).get(f"/api/coupons/{unknown}/issues/someone")
    ).status_code == 404
    assert (await http(shared_stack).get("/api/coupons/not-a-uuid")).status_code == 422


async def test_expired_coupon_is_410_expired(shared_stack: Stack) -> None:
    coupon_id = await shared_stack.create_coupon(
        5, expiresAt=(datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    )
    presses = iter(range(1000))

    async def refused_as_expired() -> bool:
        r = await shared_stack.request_issue(coupon_id, f"late-{next(presses)}")
        assert r.status_code in (202, 410), r.text
        return r.status_code == 410 and r.json()["reason"] == "EXPIRED"

    await wait_until(refused_as_expired, 10, "presses to be refused as EXPIRED", interval=0.2)


async def test_body_rules_415_and_413(shared_stack: Stack) -> None:
    coupon_id = await shared_stack.create_coupon(1)
    url = f"/api/coupons/{coupon_id}/issue/queue"
    r = await http(shared_stack).post(
        url, content=b"userId=a", headers={"content-type": "text/plain"}
    )
    assert r.status_code == 415
    big = b'{"userId": "' + b"a" * 20_000 + b'"}'
    r = await http(shared_stack).post(
        url, content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


async def test_responses_carry_a_request_id(shared_stack: Stack) -> None:
    r = await http(shared_stack).get("/healthz", headers={"x-request-id": "trace-123"})
    assert r.headers["x-request-id"] == "trace-123"
