"""Request and response shapes of the REST contract (camelCase, as the Java service had)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.domain.coupon import Coupon, DiscountType

UserId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CouponCreate(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
    discountType: DiscountType
    discountValue: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    totalQuantity: int = Field(ge=1, le=10_000_000)
    minOrderAmount: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    expiresAt: AwareDatetime

    @model_validator(mode="after")
    def _check_rules(self) -> CouponCreate:
        if self.discountType is DiscountType.PERCENT and self.discountValue > 100:
            raise ValueError("discountValue: a PERCENT discount must be at most 100")
        if self.expiresAt <= datetime.now(UTC):
            raise ValueError("expiresAt: must be in the future")
        return self


class CouponView(BaseModel):
    id: UUID
    name: str
    discountType: DiscountType
    discountValue: Decimal
    totalQuantity: int
    minOrderAmount: Decimal
    expiresAt: datetime
    createdAt: datetime
    issuedQuantity: int
    remainingQuantity: int

    @classmethod
    def of(cls, coupon: Coupon) -> CouponView:
        return cls(
            id=coupon.id,
            name=coupon.name,
            discountType=coupon.discount_type,
            discountValue=coupon.discount_value,
            totalQuantity=coupon.total_quantity,
            minOrderAmount=coupon.min_order_amount,
            expiresAt=coupon.expires_at,
            createdAt=coupon.created_at,
            issuedQuantity=coupon.issued_quantity,
            remainingQuantity=coupon.remaining_quantity,
        )


class IssueRequestBody(_Strict):
    userId: UserId


class IssueAccepted(BaseModel):
    success: Literal[True] = True
    message: str
    queueSize: int
    requestId: UUID
    status: Literal["QUEUED", "UNCONFIRMED"] = Field(
        "QUEUED",
        description="QUEUED: the broker acknowledged the request. UNCONFIRMED: it was sent but"
        " no acknowledgement came in time; the reservation is kept and the status endpoint shows"
        " the outcome (ISSUED, REJECTED, or FAILED with reason NOT_QUEUED once the reconciler"
        " settles a request that never reached the queue).",
    )


class Failure(BaseModel):
    success: Literal[False] = False
    message: str
    reason: str


class FieldError(BaseModel):
    field: str
    message: str


class ValidationFailure(BaseModel):
    success: Literal[False] = False
    message: str
    reason: Literal["VALIDATION"] = "VALIDATION"
    errors: list[FieldError]


class IssueStatusView(BaseModel):
    couponId: UUID
    userId: str
    status: Literal["PENDING", "ISSUED", "REJECTED", "FAILED"] = Field(
        description="PENDING: accepted, no outcome yet. ISSUED. REJECTED: refused by the issuer"
        " (reason SOLD_OUT, EXPIRED, DUPLICATE, UNKNOWN_COUPON). FAILED: ended without a decision"
        " and the reservation was given back, so the user may press again (reason DEAD_LETTERED:"
        " parked on the dead-letter topic, a replay may still issue it; NOT_QUEUED: it never"
        " reached the queue)."
    )
    issuedAt: datetime | None = None
    reason: str | None = None
    requestId: UUID | None = None
