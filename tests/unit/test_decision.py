from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app.domain.codec import IssueRequest
from app.domain.decision import BatchPlan, CouponStock, decide_batch
from app.domain.outcomes import IssueStatus, RejectReason

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
COUPON = uuid.uuid4()


def press(user: str, coupon: uuid.UUID = COUPON, at: datetime = NOW) -> IssueRequest:
    return IssueRequest(coupon, user, uuid.uuid4(), at)


def stock(
    total: int, issued: int = 0, expires: datetime = NOW + timedelta(hours=1)
) -> dict[uuid.UUID, CouponStock]:
    return {COUPON: CouponStock(COUPON, total, issued, expires)}


def outcomes(plan: BatchPlan) -> list[tuple[str, str | None]]:
    return [
        (d.request.user_id, d.reason.value if d.reason else d.status.value) for d in plan.decisions
    ]


def test_issues_in_order_until_stock_runs_out() -> None:
    plan = decide_batch([press("a"), press("b"), press("c")], stock(total=3, issued=1), [], [])
    assert outcomes(plan) == [("a", "ISSUED"), ("b", "ISSUED"), ("c", "SOLD_OUT")]
    assert plan.issued_per_coupon == {COUPON: 2}


def test_same_user_twice_in_a_batch_gets_one_coupon() -> None:
    plan = decide_batch([press("a"), press("a")], stock(total=5), [], [])
    assert outcomes(plan) == [("a", "ISSUED"), ("a", "DUPLICATE")]


def test_existing_holder_is_refused_as_duplicate() -> None:
    plan = decide_batch([press("a")], stock(total=5, issued=1), [(COUPON, "a")], [])
    assert outcomes(plan) == [("a", "DUPLICATE")]
    assert plan.issued_per_coupon == {}


def test_redelivered_request_changes_nothing() -> None:
    first = press("a")
    plan = decide_batch([first, first], stock(total=5), [], [first.request_id])
    assert plan.decisions == [] and plan.already_processed == 2


def test_request_after_expiry_is_rejected_but_one_before_is_honoured() -> None:
    expires = NOW
    late = press("late", at=NOW + timedelta(seconds=1))
    early = press("early", at=NOW - timedelta(seconds=1))
    plan = decide_batch([late, early], stock(total=5, expires=expires), [], [])
    assert outcomes(plan) == [("late", "EXPIRED"), ("early", "ISSUED")]


def test_unknown_coupon_is_rejected() -> None:
    plan = decide_batch([press("a", coupon=uuid.uuid4())], stock(total=5), [], [])
    assert plan.decisions[0].status is IssueStatus.REJECTED
    assert plan.decisions[0].reason is RejectReason.UNKNOWN_COUPON


def test_never_issues_more_than_remaining_stock_whatever_the_batch() -> None:
    requests = [press(f"u{i}") for i in range(50)]
    plan = decide_batch(requests, stock(total=10, issued=7), [], [])
    assert plan.issued_per_coupon[COUPON] == 3
