"""A coupon made for a test or a bench run, inserted without the API (the fields the run does not
care about set once, here)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.domain.coupon import Coupon, DiscountType


def sale_coupon(
    total: int,
    name: str = "test sale",
    *,
    coupon_id: uuid.UUID | None = None,
    created_at: datetime | None = None,
    expires_in: timedelta = timedelta(hours=1),
) -> Coupon:
    """A fixed-discount coupon of ``total`` stock, expiring ``expires_in`` from now."""
    now = datetime.now(UTC)
    return Coupon(
        id=coupon_id or uuid.uuid4(),
        name=name,
        discount_type=DiscountType.FIXED,
        discount_value=Decimal(1000),
        total_quantity=total,
        min_order_amount=Decimal(0),
        expires_at=now + expires_in,
        created_at=created_at or now,
    )


def coupon_body(total: int, name: str = "test sale", **overrides: Any) -> dict[str, Any]:
    """The JSON body of ``POST /api/coupons``: a fixed-discount sale of ``total``, expiring in an
    hour (``overrides`` wins, in the API's camelCase)."""
    return {
        "name": name,
        "discountType": "FIXED",
        "discountValue": 1000,
        "totalQuantity": total,
        "minOrderAmount": 0,
        "expiresAt": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        **overrides,
    }
