"""The coupon as the business sees it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID


class DiscountType(enum.StrEnum):
    PERCENT = "PERCENT"
    FIXED = "FIXED"


@dataclass(frozen=True, slots=True)
class Coupon:
    """A coupon definition plus how many have been issued so far."""

    id: UUID
    name: str
    discount_type: DiscountType
    discount_value: Decimal
    total_quantity: int
    min_order_amount: Decimal
    expires_at: datetime
    created_at: datetime
    issued_quantity: int = 0
    # The request topic's partition every press of this coupon goes to (None: created before
    # partitions were fixed per coupon; its key's hash over the configured count is used).
    partition: int | None = None

    @property
    def remaining_quantity(self) -> int:
        return max(0, self.total_quantity - self.issued_quantity)

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at
