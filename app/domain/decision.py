"""The issue decision for a batch of requests: who gets a coupon, who is refused and why.

Pure: the consumer reads the current state under a row lock, calls ``decide_batch`` and writes the
plan back in the same transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from app.domain.codec import IssueRequest
from app.domain.outcomes import IssueStatus, RejectReason


@dataclass(frozen=True, slots=True)
class CouponStock:
    """What the decision needs to know about a coupon, read under lock."""

    coupon_id: UUID
    total_quantity: int
    issued_quantity: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    request: IssueRequest
    status: IssueStatus
    reason: RejectReason | None = None


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """Decisions for requests not seen before, and how much each coupon's count advances."""

    decisions: list[Decision] = field(default_factory=list)
    issued_per_coupon: Mapping[UUID, int] = field(default_factory=dict)
    already_processed: int = 0
    processed_at: datetime | None = None  # set when the plan is written


def decide_batch(
    requests: Iterable[IssueRequest],
    stocks: Mapping[UUID, CouponStock],
    issued_users: Iterable[tuple[UUID, str]],
    processed_request_ids: Iterable[UUID],
) -> BatchPlan:
    """Decide each request in order; requests already processed (redeliveries) are skipped."""
    seen_requests = set(processed_request_ids)
    holders = set(issued_users)
    issued: Counter[UUID] = Counter()
    decisions: list[Decision] = []
    skipped = 0
    for request in requests:
        if request.request_id in seen_requests:
            skipped += 1
            continue
        seen_requests.add(request.request_id)
        status, reason = _decide_one(request, stocks.get(request.coupon_id), holders, issued)
        if status is IssueStatus.ISSUED:
            holders.add((request.coupon_id, request.user_id))
            issued[request.coupon_id] += 1
        decisions.append(Decision(request, status, reason))
    return BatchPlan(decisions, dict(issued), skipped)


def _decide_one(
    request: IssueRequest,
    stock: CouponStock | None,
    holders: set[tuple[UUID, str]],
    issued_in_batch: Counter[UUID],
) -> tuple[IssueStatus, RejectReason | None]:
    if stock is None:
        return IssueStatus.REJECTED, RejectReason.UNKNOWN_COUPON
    if (request.coupon_id, request.user_id) in holders:
        return IssueStatus.REJECTED, RejectReason.DUPLICATE
    # The gate accepted the press before expiry; honour it even if processed a little later.
    if request.requested_at >= stock.expires_at:
        return IssueStatus.REJECTED, RejectReason.EXPIRED
    if stock.issued_quantity + issued_in_batch[request.coupon_id] >= stock.total_quantity:
        return IssueStatus.REJECTED, RejectReason.SOLD_OUT
    return IssueStatus.ISSUED, None
