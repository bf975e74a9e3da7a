"""Timestamps and money on the wire: zone-less timestamps are read in COUPON_DEFAULT_TIMEZONE,
answers always carry an offset, and money is a JSON number with the stored 2 decimals."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from harness import wait_until
from tests.stack import Stack, isolated_settings

OFFSET = re.compile(r"(Z|[+-]\d\d:\d\d)$")
BODY: dict[str, Any] = {
    "name": "legacy",
    "discountType": "FIXED",
    "discountValue": 10,
    "totalQuantity": 5,
    "minOrderAmount": "10000",
}


def http(stack: Stack) -> httpx.AsyncClient:
    assert stack.http is not None
    return stack.http


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seoul(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """An API configured for a Korean shop (no consumers: these tests only create and read)."""
    settings = isolated_settings(kafka_bootstrap, default_timezone="Asia/Seoul")
    stack = await Stack(settings, Path(tmp_path_factory.mktemp("seoul"))).start(consumers=0)
    yield stack
    await stack.stop()


async def create(stack: Stack, expires_at: str) -> httpx.Response:
    return await http(stack).post("/api/coupons", json={**BODY, "expiresAt": expires_at})


async def stored_expiry(stack: Stack, coupon_id: str) -> datetime:
    value = await stack.pool.fetchval(
        "SELECT expires_at FROM coupons WHERE id = $1", uuid.UUID(coupon_id)
    )
    assert isinstance(value, datetime)
    return value


async def test_a_zone_less_timestamp_is_read_in_the_default_zone_utc(shared_stack: Stack) -> None:
    r = await create(shared_stack, "2030-12-31T23:59:59")
    assert r.status_code == 201, r.text
    assert r.json()["expiresAt"] == "2030-12-31T23:59:59Z"
    assert await stored_expiry(shared_stack, r.json()["id"]) == datetime(
        2030, 12, 31, 23, 59, 59, tzinfo=UTC
    )


async def test_a_zone_less_timestamp_is_read_in_the_configured_zone(seoul: Stack) -> None:
    r = await create(seoul, "2030-12-31T23:59:59")
    assert r.status_code == 201, r.text
    assert r.json()["expiresAt"] == "2030-12-31T23:59:59+09:00"
    assert await stored_expiry(seoul, r.json()["id"]) == datetime(
        2030, 12, 31, 14, 59, 59, tzinfo=UTC
    )
    read = (await http(seoul).get(f"/api/coupons/{r.json()['id']}")).json()
    assert read["expiresAt"] == "2030-12-31T23:59:59+09:00"
    assert OFFSET.search(read["createdAt"]) and read["createdAt"].endswith("+09:00")


async def test_explicit_offsets_keep_their_instant(seoul: Stack, shared_stack: Stack) -> None:
    r = await create(seoul, "2030-06-01T00:00:00Z")
    assert r.status_code == 201 and r.json()["expiresAt"] == "2030-06-01T09:00:00+09:00"
    r = await create(shared_stack, "2030-06-01T09:00:00+09:00")
    assert r.status_code == 201 and r.json()["expiresAt"] == "2030-06-01T00:00:00Z"


async def test_the_future_rule_applies_after_the_zone(seoul: Stack, shared_stack: Stack) -> None:
    """Five hours ahead on a UTC clock is already past in Seoul (UTC+9)."""
    wall_clock = (datetime.now(UTC) + timedelta(hours=5)).replace(tzinfo=None).isoformat()
    assert (await create(shared_stack, wall_clock)).status_code == 201
    r = await create(seoul, wall_clock)
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["expiresAt"]
    assert "must be in the future" in r.json()["message"]


async def test_money_is_the_same_json_number_on_create_and_read(shared_stack: Stack) -> None:
    created = await create(shared_stack, "2030-12-31T23:59:59")
    read = await http(shared_stack).get(f"/api/coupons/{created.json()['id']}")
    for answer in (created, read):
        assert b'"discountValue":10.00' in answer.content, answer.text
        assert b'"minOrderAmount":10000.00' in answer.content, answer.text
        body = answer.json()
        assert isinstance(body["discountValue"], float) and body["discountValue"] == 10
    money = {k: created.json()[k] for k in ("discountValue", "minOrderAmount")}
    assert money == {k: read.json()[k] for k in money}
    r = await http(shared_stack).post(
        "/api/coupons",
        json={**BODY, "discountValue": "1234567890.5", "expiresAt": "2030-01-01T00:00:00"},
    )
    assert r.status_code == 201 and b'"discountValue":1234567890.50' in r.content


async def test_issued_at_carries_an_offset(shared_stack: Stack) -> None:
    coupon_id = await shared_stack.create_coupon(1)
    assert (await shared_stack.request_issue(coupon_id, "offset-user")).status_code == 202

    async def issued() -> dict[str, Any] | None:
        r = await http(shared_stack).get(f"/api/coupons/{coupon_id}/issues/offset-user")
        body: dict[str, Any] = r.json()
        return body if body.get("status") == "ISSUED" else None

    body = await wait_until(issued, 30, "the press to be issued")
    assert OFFSET.search(body["issuedAt"]), body


async def test_openapi_says_numbers_and_zone_less_timestamps(shared_stack: Stack) -> None:
    spec = (await http(shared_stack).get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    view = schemas["CouponView"]["properties"]
    for field in ("discountValue", "minOrderAmount"):
        assert view[field]["type"] == "number" and "2 decimals" in view[field]["description"]
    created = spec["paths"]["/api/coupons"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"]["$ref"].endswith("/CouponView")
    expires = schemas["CouponCreate"]["properties"]["expiresAt"]
    assert "COUPON_DEFAULT_TIMEZONE" in expires["description"]
