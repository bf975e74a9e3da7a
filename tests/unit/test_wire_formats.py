"""Pure parts of the wire formats: zone resolution, the money rendering, the zone setting."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
import pytest
from pydantic import ValidationError

from app.api.schemas import CouponCreate, CouponView, in_zone
from app.config import Settings
from app.domain.coupon import Coupon, DiscountType

SEOUL = ZoneInfo("Asia/Seoul")


def body(**overrides: object) -> dict[str, object]:
    return {
        "name": "n",
        "discountType": "FIXED",
        "discountValue": 10,
        "totalQuantity": 1,
        "minOrderAmount": 0,
        "expiresAt": "2025-12-31T23:59:59",
        **overrides,
    }


def test_a_java_local_date_time_parses_and_takes_the_configured_zone() -> None:
    create = CouponCreate.model_validate(body())
    assert create.expiresAt.tzinfo is None
    assert create.expires_at(SEOUL) == datetime(2025, 12, 31, 14, 59, 59, tzinfo=UTC)
    assert create.expires_at(UTC) == datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_an_explicit_offset_is_kept_whatever_the_zone() -> None:
    create = CouponCreate.model_validate(body(expiresAt="2025-12-31T23:59:59-05:00"))
    assert create.expires_at(SEOUL) == datetime(2026, 1, 1, 4, 59, 59, tzinfo=UTC)
    aware = datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert in_zone(aware, SEOUL) is aware


def test_garbage_is_still_refused() -> None:
    with pytest.raises(ValidationError):
        CouponCreate.model_validate(body(expiresAt="tomorrow"))


def coupon(value: str, minimum: str) -> Coupon:
    return Coupon(
        id=uuid.uuid4(),
        name="n",
        discount_type=DiscountType.PERCENT,
        discount_value=Decimal(value),
        total_quantity=1,
        min_order_amount=Decimal(minimum),
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        created_at=datetime(2029, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("value", "rendered"),
    [("10", b"10.00"), ("10.00", b"10.00"), ("0.5", b"0.50"), ("9999999999.99", b"9999999999.99")],
)
def test_money_renders_as_a_number_with_the_stored_scale(value: str, rendered: bytes) -> None:
    view = CouponView.of(coupon(value, value), UTC)
    raw = orjson.dumps(view.model_dump())
    assert b'"discountValue":' + rendered in raw and b'"minOrderAmount":' + rendered in raw
    # pydantic's own JSON mode gives the same number (no strings anywhere)
    assert orjson.loads(view.model_dump_json())["discountValue"] == float(value)


def test_views_answer_in_the_configured_zone() -> None:
    view = CouponView.of(coupon("1", "0"), SEOUL)
    assert view.expires_at.isoformat() == "2030-01-01T09:00:00+09:00"


def test_the_default_timezone_must_be_a_real_zone() -> None:
    assert Settings(default_timezone="Asia/Seoul").zone == SEOUL
    assert Settings().zone == ZoneInfo("UTC")
    with pytest.raises(ValidationError, match="Asia/Seoul"):
        Settings(default_timezone="Seoul")
