"""Request and response shapes of the REST contract (camelCase, as the Java service had)."""

from __future__ import annotations

from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializationInfo,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from app.domain.codec import USER_ID_CHARS, USER_ID_MAX_LENGTH
from app.domain.coupon import Coupon, DiscountType

# The length apart from the characters, so a 422 names which rule a user id broke.
UserId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=USER_ID_MAX_LENGTH, pattern=rf"^{USER_ID_CHARS}+$"),
]


_CENT = Decimal("0.01")


def _money_out(value: Decimal, info: SerializationInfo) -> Any:
    """Money leaves as a JSON number with exactly the stored scale (``10.00``), as the Java
    service's BigDecimal did: raw digits for orjson (``model_dump()``), a float in pydantic's JSON
    mode (exact too: 12 significant digits round-trip through a double)."""
    cents = value.quantize(_CENT)
    return float(cents) if info.mode_is_json() else orjson.Fragment(str(cents))


Money = Annotated[
    Decimal,
    PlainSerializer(_money_out, return_type=Any),
    WithJsonSchema(
        {"type": "number", "description": "A JSON number with 2 decimals (the stored scale)"},
        mode="serialization",
    ),
]

# Timestamps in: ISO 8601, with an offset or without one (Java's LocalDateTime, as the old
# service's clients send); a zone-less one is wall-clock time in COUPON_DEFAULT_TIMEZONE.
TimestampIn = Annotated[
    datetime,
    Field(
        description="ISO 8601; without an offset it is read in COUPON_DEFAULT_TIMEZONE (UTC)",
        examples=["2030-12-31T23:59:59", "2030-12-31T23:59:59+09:00"],
    ),
]


def in_zone(value: datetime, zone: tzinfo) -> datetime:
    """A zone-less timestamp is wall-clock time in ``zone``; one with an offset keeps its own."""
    return value.replace(tzinfo=zone) if value.tzinfo is None else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CouponCreate(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
    discountType: DiscountType
    discountValue: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    totalQuantity: int = Field(ge=1, le=10_000_000)
    minOrderAmount: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    expiresAt: TimestampIn

    @model_validator(mode="after")
    def _check_rules(self) -> CouponCreate:
        if self.discountType is DiscountType.PERCENT and self.discountValue > 100:
            raise ValueError("discountValue: a PERCENT discount must be at most 100")
        return self

    def expires_at(self, zone: tzinfo) -> datetime:
        """``expiresAt`` with its zone resolved (the route checks it lies in the future)."""
        return in_zone(self.expiresAt, zone)


class CouponView(BaseModel):
    """A coupon as every endpoint answers it: money as numbers, timestamps with an offset
    (in COUPON_DEFAULT_TIMEZONE). Read straight from the domain ``Coupon`` (its attribute
    names, camelCase on the wire): one list of fields, not a copy per direction."""

    model_config = ConfigDict(
        from_attributes=True,
        alias_generator=to_camel,
        validate_by_name=True,
        serialize_by_alias=True,
    )

    id: UUID
    name: str
    discount_type: DiscountType
    discount_value: Money
    total_quantity: int
    min_order_amount: Money
    expires_at: AwareDatetime
    created_at: AwareDatetime
    issued_quantity: int
    remaining_quantity: int

    @field_validator("id")
    @classmethod
    def _plain_uuid(cls, value: UUID) -> UUID:
        return UUID(int=value.int)  # asyncpg's UUID subclass -> the stdlib type orjson writes

    @field_validator("expires_at", "created_at")
    @classmethod
    def _in_zone(cls, value: datetime, info: ValidationInfo) -> datetime:
        zone = (info.context or {}).get("zone")
        return value.astimezone(zone) if zone is not None else value

    @classmethod
    def of(cls, coupon: Coupon, zone: tzinfo) -> CouponView:
        return cls.model_validate(coupon, context={"zone": zone})


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
        " the outcome (ISSUED, REJECTED, or FAILED once the reconciler settles a request that has"
        " no outcome and nothing left queued for it).",
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
        " parked on the dead-letter topic, a replay may still issue it; NOT_QUEUED: no outcome and"
        " nothing left queued for it; TOPIC_RECREATED: the request topic was deleted and created"
        " again after it was accepted; LOG_TRUNCATED: the broker lost acknowledged messages of its"
        " partition after it was accepted)."
    )
    issuedAt: datetime | None = None
    reason: str | None = None
    requestId: UUID | None = None
