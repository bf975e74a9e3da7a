"""Properties of the issue decision over arbitrary request sequences (hypothesis).

The model of the database is the state the consumer reads under the row lock: per coupon the stock
and issued count, the holders, and the request ids already processed. Whatever the sequence, the
batching and the redeliveries, the decision never issues beyond stock, never twice per user, never
twice per request, and serves requests strictly in order.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.codec import IssueRequest
from app.domain.decision import BatchPlan, CouponStock, decide_batch
from app.domain.invariants import CouponFigures, check_database
from app.domain.outcomes import IssueStatus, RejectReason

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
COUPONS = [uuid.UUID(int=1), uuid.UUID(int=2)]
UNKNOWN = uuid.UUID(int=99)


@dataclass
class Db:
    """What PostgreSQL holds between batches (the consumer reads it under the coupon row lock)."""

    stocks: dict[uuid.UUID, CouponStock]
    holders: set[tuple[uuid.UUID, str]] = field(default_factory=set)
    processed: set[uuid.UUID] = field(default_factory=set)

    def decide(self, batch: list[IssueRequest]) -> BatchPlan:
        return decide_batch(batch, self.stocks, set(self.holders), set(self.processed))

    def apply(self, plan: BatchPlan) -> None:
        """Commit a plan as the consumer's transaction does."""
        for d in plan.decisions:
            self.processed.add(d.request.request_id)
            if d.status is IssueStatus.ISSUED:
                self.holders.add((d.request.coupon_id, d.request.user_id))
        for cid, n in plan.issued_per_coupon.items():
            s = self.stocks[cid]
            self.stocks[cid] = CouponStock(
                cid, s.total_quantity, s.issued_quantity + n, s.expires_at
            )


@st.composite
def databases(draw: st.DrawFn) -> Db:
    stocks = {}
    for cid in COUPONS:
        total = draw(st.integers(1, 8))
        stocks[cid] = CouponStock(
            cid,
            total,
            draw(st.integers(0, total)),
            NOW + timedelta(seconds=draw(st.integers(-5, 5))),
        )
    held = draw(st.sets(st.tuples(st.sampled_from(COUPONS), st.sampled_from("abcdef")), max_size=4))
    return Db(stocks, held)


@st.composite
def request_streams(draw: st.DrawFn) -> list[IssueRequest]:
    """Presses from a few users on two coupons (and an unknown one), with redeliveries mixed in."""
    fresh = draw(
        st.lists(
            st.builds(
                IssueRequest,
                coupon_id=st.sampled_from([*COUPONS, UNKNOWN]),
                user_id=st.sampled_from("abcdefgh"),
                request_id=st.builds(uuid.uuid4),
                requested_at=st.integers(-10, 10).map(lambda s: NOW + timedelta(seconds=s)),
            ),
            max_size=40,
        )
    )
    stream = list(fresh)
    for i in draw(st.lists(st.integers(0, max(len(fresh) - 1, 0)), max_size=10)):
        if fresh:
            stream.insert(draw(st.integers(0, len(stream))), fresh[i])  # a redelivery
    return stream


def _split(stream: list[IssueRequest], cuts: list[int]) -> list[list[IssueRequest]]:
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300)
@given(db=databases(), stream=request_streams(), cuts=st.lists(st.integers(0, 60), max_size=5))
def test_any_stream_in_any_batches_never_over_issues_or_doubles(
    db: Db, stream: list[IssueRequest], cuts: list[int]
) -> None:
    start = {cid: s.issued_quantity for cid, s in db.stocks.items()}
    holders_before = set(db.holders)
    decided: list[uuid.UUID] = []
    issued_pairs: list[tuple[uuid.UUID, str]] = []
    for batch in _split(stream, cuts):
        plan = db.decide(batch)
        assert len(plan.decisions) + plan.already_processed == len(batch)
        issued_here = Counter(
            d.request.coupon_id for d in plan.decisions if d.status is IssueStatus.ISSUED
        )
        assert dict(issued_here) == dict(plan.issued_per_coupon)
        for d in plan.decisions:
            assert (d.status is IssueStatus.ISSUED) == (d.reason is None)
            decided.append(d.request.request_id)
            if d.status is IssueStatus.ISSUED:
                issued_pairs.append((d.request.coupon_id, d.request.user_id))
        db.apply(plan)

    for s in db.stocks.values():
        assert s.issued_quantity <= s.total_quantity  # never beyond stock
    assert len(decided) == len(set(decided)) == len({r.request_id for r in stream})
    assert len(issued_pairs) == len(set(issued_pairs))  # never twice per user
    assert not set(issued_pairs) & holders_before  # never to someone who already holds it
    assert all(cid != UNKNOWN for cid, _ in issued_pairs)
    assert sum(db.stocks[c].issued_quantity - start[c] for c in COUPONS) == len(issued_pairs)


@settings(max_examples=300)
@given(db=databases(), stream=request_streams(), cuts=st.lists(st.integers(0, 60), max_size=5))
def test_batching_does_not_change_any_outcome(
    db: Db, stream: list[IssueRequest], cuts: list[int]
) -> None:
    """One batch or many (a rebalance, a crash, a small poll): the same users get the coupon."""
    whole = Db(dict(db.stocks), set(db.holders))
    plan = whole.decide(stream)
    in_one = {d.request.request_id: (d.status, d.reason) for d in plan.decisions}
    in_parts: dict[uuid.UUID, tuple[IssueStatus, RejectReason | None]] = {}
    for batch in _split(stream, cuts):
        part = db.decide(batch)
        in_parts.update({d.request.request_id: (d.status, d.reason) for d in part.decisions})
        db.apply(part)
    assert in_parts == in_one


@settings(max_examples=200)
@given(db=databases(), stream=request_streams())
def test_first_come_first_served_once_sold_out_nobody_later_is_issued(
    db: Db, stream: list[IssueRequest]
) -> None:
    plan = db.decide(stream)
    sold_out_seen: set[uuid.UUID] = set()
    for d in plan.decisions:
        cid = d.request.coupon_id
        if d.reason is RejectReason.SOLD_OUT:
            sold_out_seen.add(cid)
        if d.status is IssueStatus.ISSUED:
            assert cid not in sold_out_seen, "issued after the coupon was declared sold out"


@given(
    total=st.integers(1, 100),
    issued=st.integers(0, 200),
    rows=st.integers(0, 200),
    doubled=st.integers(0, 5),
)
def test_verify_flags_exactly_the_broken_database_invariants(
    total: int, issued: int, rows: int, doubled: int
) -> None:
    figures = CouponFigures(uuid.uuid4(), total, issued, rows, double_issued=doubled)
    found = {v.check for v in check_database(figures)}
    expected = set()
    if issued > total:
        expected.add("over_issue")
    if issued != rows:
        expected.add("count_mismatch")
    if doubled:
        expected.add("double_issue")
    assert found == expected
