"""PostgreSQL: the source of truth. Every statement the service runs lives here; the pool and the
migrations are in postgres_setup.py, verify's read-only checks in postgres_invariants.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from uuid import UUID

from asyncpg import Connection, Pool

from app.domain.coupon import Coupon, DiscountType
from app.domain.decision import CouponStock, Decision
from app.domain.outcomes import FailReason, IssueStatus
from app.domain.settlement import FailedRequest, PartitionWatch
from app.domain.status import RecordedOutcome

_COUPON_COLUMNS = (
    "id, name, discount_type, discount_value, total_quantity, issued_quantity,"
    " min_order_amount, expires_at, created_at, partition"
)

# Lookups by a list of keys probe an index per key whatever the plan: a LATERAL subquery with a
# LIMIT is never flattened, so the index is its only sensible plan. A join or `= ANY` let the
# generic plan PostgreSQL caches after five executions, made while issue_requests was small,
# hash or scan every row on each batch once the table had grown (most of PostgreSQL's CPU in a
# sale on a fresh table; docs/performance.md).
_PROBE_IDS = "unnest($1::uuid[]) AS p(id) CROSS JOIN LATERAL"


async def insert_coupon(conn: Connection, coupon: Coupon) -> None:
    await conn.execute(
        "INSERT INTO coupons (id, name, discount_type, discount_value, total_quantity,"
        " min_order_amount, expires_at, created_at, partition)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        coupon.id,
        coupon.name,
        coupon.discount_type.value,
        coupon.discount_value,
        coupon.total_quantity,
        coupon.min_order_amount,
        coupon.expires_at,
        coupon.created_at,
        coupon.partition,
    )


async def get_coupon(conn: Connection, coupon_id: UUID) -> Coupon | None:
    row = await conn.fetchrow(f"SELECT {_COUPON_COLUMNS} FROM coupons WHERE id = $1", coupon_id)
    return _coupon(row) if row else None


async def coupon_ids(conn: Connection) -> list[UUID]:
    """Every coupon id (the gate's registry of known coupons is built from it)."""
    return [r["id"] for r in await conn.fetch("SELECT id FROM coupons")]


async def active_coupons(conn: Connection, now: datetime, limit: int = 1000) -> list[Coupon]:
    """Coupons not yet expired, newest first."""
    rows = await conn.fetch(
        f"SELECT {_COUPON_COLUMNS} FROM coupons WHERE expires_at > $1"
        " ORDER BY created_at DESC LIMIT $2",
        now,
        limit,
    )
    return [_coupon(r) for r in rows]


def _coupon(row: Mapping[str, object]) -> Coupon:
    return Coupon(
        id=row["id"],  # type: ignore[arg-type]
        name=row["name"],  # type: ignore[arg-type]
        discount_type=DiscountType(str(row["discount_type"])),
        discount_value=row["discount_value"],  # type: ignore[arg-type]
        total_quantity=row["total_quantity"],  # type: ignore[arg-type]
        issued_quantity=row["issued_quantity"],  # type: ignore[arg-type]
        min_order_amount=row["min_order_amount"],  # type: ignore[arg-type]
        expires_at=row["expires_at"],  # type: ignore[arg-type]
        created_at=row["created_at"],  # type: ignore[arg-type]
        partition=row["partition"],  # type: ignore[arg-type]
    )


# --- issue requests ---------------------------------------------------------------------------


async def holders(conn: Connection, coupon_id: UUID) -> list[tuple[str, UUID]]:
    """Every (user, request id) holding the coupon (used to rebuild the Redis gate)."""
    rows = await conn.fetch(
        "SELECT user_id, request_id FROM issue_requests WHERE coupon_id = $1 AND status = 'ISSUED'",
        coupon_id,
    )
    return [(r["user_id"], r["request_id"]) for r in rows]


async def recorded_outcomes(
    conn: Connection, coupon_id: UUID, user_id: str
) -> list[RecordedOutcome]:
    """Every outcome recorded for this user and coupon: decisions and failures."""
    rows = await conn.fetch(
        "SELECT request_id, status, reason, processed_at AS at FROM issue_requests"
        " WHERE coupon_id = $1 AND user_id = $2"
        " UNION ALL"
        " SELECT request_id, 'FAILED', reason, failed_at FROM failed_requests"
        " WHERE coupon_id = $1 AND user_id = $2",
        coupon_id,
        user_id,
    )
    return [
        RecordedOutcome(r["request_id"], IssueStatus(r["status"]), r["reason"], r["at"])
        for r in rows
    ]


_LATEST_OUTCOMES = """
SELECT DISTINCT ON (coupon_id, user_id) coupon_id, user_id, request_id, status, reason, at FROM (
  SELECT coupon_id, user_id, request_id, status, reason, processed_at AS at FROM issue_requests
  WHERE {where}
  UNION ALL
  SELECT coupon_id, user_id, request_id, 'FAILED', reason, failed_at FROM failed_requests
  WHERE {where}
) o ORDER BY coupon_id, user_id, (status = 'ISSUED') DESC, at DESC
"""


async def coupon_outcomes(conn: Connection, coupon_id: UUID) -> list[tuple[str, RecordedOutcome]]:
    """Each user's status-deciding outcome for a coupon (to rebuild what Redis lost)."""
    rows = await conn.fetch(_LATEST_OUTCOMES.format(where="coupon_id = $1"), coupon_id)
    return [(r["user_id"], _outcome(r)) for r in rows]


async def outcomes_of_requests(
    conn: Connection, request_ids: Sequence[UUID]
) -> list[tuple[UUID, str, RecordedOutcome]]:
    """The status-deciding outcome of each user owning one of these requests."""
    rows = await conn.fetch(
        _LATEST_OUTCOMES.format(
            where="(coupon_id, user_id) IN (SELECT coupon_id, user_id FROM issue_requests"
            " WHERE request_id = ANY($1::uuid[]))"
        ),
        list(request_ids),
    )
    return [(r["coupon_id"], r["user_id"], _outcome(r)) for r in rows]


def _outcome(row: Mapping[str, object]) -> RecordedOutcome:
    return RecordedOutcome(
        row["request_id"],  # type: ignore[arg-type]
        IssueStatus(str(row["status"])),
        row["reason"],  # type: ignore[arg-type]
        row["at"],  # type: ignore[arg-type]
    )


# Failures of requests that ended with no decision (a dead letter, a stranded reservation), set-
# based and idempotent per request id: a failure already recorded under the same reason is
# refreshed, one under another reason is kept. It answers, for each request, the failure that is
# recorded now: the one just written, or the one already there. The outer SELECT sees the table as
# it was before the INSERT, so an existing row is read from ``f``, a new or updated one from ``w``.
_RECORD_FAILURES = """
WITH given AS (
  SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                       $6::timestamptz[])
    AS g(request_id, coupon_id, user_id, reason, detail, failed_at)
), written AS (
  INSERT INTO failed_requests (request_id, coupon_id, user_id, reason, detail, failed_at)
  SELECT * FROM given
  ON CONFLICT (request_id) DO UPDATE SET detail = EXCLUDED.detail,
    failed_at = EXCLUDED.failed_at WHERE failed_requests.reason = EXCLUDED.reason
  RETURNING request_id, reason, failed_at
)
SELECT g.request_id, coalesce(w.reason, f.reason) AS reason,
       coalesce(w.failed_at, f.failed_at) AS failed_at
FROM given g
LEFT JOIN written w ON w.request_id = g.request_id
LEFT JOIN failed_requests f ON f.request_id = g.request_id
"""


async def record_failures(
    conn: Connection, failures: Sequence[FailedRequest]
) -> dict[UUID, RecordedOutcome]:
    """Record that these accepted requests ended with no decision, in one statement (idempotent
    per request id); returns each request's FAILED outcome as now recorded (an earlier one under
    another reason is kept, and returned)."""
    if not failures:
        return {}
    unique = list({f.request_id: f for f in failures}.values())  # one row per request id
    rows = await conn.fetch(
        _RECORD_FAILURES,
        [f.request_id for f in unique],
        [f.coupon_id for f in unique],
        [f.user_id for f in unique],
        [f.reason.value for f in unique],
        [f.detail[:2000] for f in unique],
        [f.failed_at for f in unique],
    )
    return {
        r["request_id"]: RecordedOutcome(
            r["request_id"], IssueStatus.FAILED, r["reason"], r["failed_at"]
        )
        for r in rows
    }


async def partition_watches(conn: Connection, topic: str) -> dict[int, PartitionWatch]:
    """What the reconciler remembers of the topic's partitions, by partition."""
    rows = await conn.fetch(
        "SELECT partition, topic_id, log_end, seen_at, lost_at, lost_reason, lost_why"
        " FROM reconciler_partitions WHERE topic = $1",
        topic,
    )
    return {
        r["partition"]: PartitionWatch(
            r["partition"],
            r["topic_id"],
            r["log_end"],
            r["seen_at"],
            r["lost_at"],
            None if r["lost_reason"] is None else FailReason(r["lost_reason"]),
            r["lost_why"],
        )
        for r in rows
    }


async def save_partition_watches(
    conn: Connection, topic: str, watches: Sequence[PartitionWatch]
) -> None:
    """Remember these watches (one statement); a loss already remembered is kept over an older
    one a concurrent reconciler writes."""
    if not watches:
        return
    await conn.execute(
        "INSERT INTO reconciler_partitions AS t (topic, partition, topic_id, log_end, seen_at,"
        " lost_at, lost_reason, lost_why)"
        " SELECT $1, w.* FROM unnest($2::int[], $3::uuid[], $4::bigint[], $5::timestamptz[],"
        " $6::timestamptz[], $7::text[], $8::text[]) AS w"
        " ON CONFLICT (topic, partition) DO UPDATE SET topic_id = EXCLUDED.topic_id,"
        " log_end = EXCLUDED.log_end, seen_at = EXCLUDED.seen_at,"
        " lost_at = greatest(t.lost_at, EXCLUDED.lost_at),"
        " lost_reason = CASE WHEN EXCLUDED.lost_at IS NULL OR t.lost_at > EXCLUDED.lost_at"
        "   THEN t.lost_reason ELSE EXCLUDED.lost_reason END,"
        " lost_why = CASE WHEN EXCLUDED.lost_at IS NULL OR t.lost_at > EXCLUDED.lost_at"
        "   THEN t.lost_why ELSE EXCLUDED.lost_why END",
        topic,
        [w.partition for w in watches],
        [w.topic_id for w in watches],
        [w.log_end for w in watches],
        [w.seen_at for w in watches],
        [w.lost_at for w in watches],
        [None if w.lost_reason is None else w.lost_reason.value for w in watches],
        [w.lost_why for w in watches],
    )


async def undecided_requests(conn: Connection, request_ids: Sequence[UUID]) -> set[UUID]:
    """Which of these request ids have no issue decision (no row in issue_requests)."""
    # The decided ones by an index probe each (see _PROBE_IDS), the rest here: an anti-join's
    # generic plan, cached while the table was small, scanned it whole on every pass.
    rows = await conn.fetch(
        f"SELECT p.id FROM {_PROBE_IDS} (SELECT 1 FROM issue_requests r"
        "   WHERE r.request_id = p.id LIMIT 1) AS decided",
        list(request_ids),
    )
    return set(request_ids) - {r["id"] for r in rows}


async def probe_writes(pool: Pool) -> None:
    """Raise unless the database takes the issue path's writes (rolled back: changes nothing).

    Tells "the database refuses everything" (read-only after a failover, a missing table, lost
    privileges) from "this message is refused" when a lone message fails.
    """
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("UPDATE coupons SET issued_quantity = issued_quantity WHERE false")
            await conn.execute(
                "INSERT INTO issue_requests (request_id, coupon_id, user_id, status, reason,"
                " requested_at) VALUES (gen_random_uuid(), gen_random_uuid(), 'probe',"
                " 'REJECTED', 'UNKNOWN_COUPON', now())"
            )
        finally:
            await tx.rollback()


@asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[Connection]:
    async with pool.acquire() as conn, conn.transaction():
        yield conn


async def lock_stocks(conn: Connection, coupon_ids: Iterable[UUID]) -> dict[UUID, CouponStock]:
    """Lock the coupons' rows (in id order, so concurrent batches cannot deadlock)."""
    rows = await conn.fetch(
        "SELECT id, total_quantity, issued_quantity, expires_at FROM coupons"
        " WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        list(coupon_ids),
    )
    return {
        r["id"]: CouponStock(r["id"], r["total_quantity"], r["issued_quantity"], r["expires_at"])
        for r in rows
    }


# What a batch must know before it decides, in one round trip: which of its requests already have
# their final outcome (kind 'p': a decision, or settled by the reconciler with any FAILED reason
# but DEAD_LETTERED), and which of its (coupon, user) pairs already hold the coupon (kind 'h').
# A settled press can still be delivered later (a leader left alone commits what it appended once
# its followers return): its user was told FAILED and its reservation given back, so it is skipped
# like a redelivery. A dead letter is not final here: a replay may still issue it.
_SEEN_BEFORE = f"""
SELECT 'p' AS kind, p.id AS coupon_or_request, NULL::text AS user_id FROM {_PROBE_IDS}
  (SELECT 1 FROM issue_requests r WHERE r.request_id = p.id LIMIT 1) AS decided
UNION ALL
SELECT 'p', p.id, NULL FROM {_PROBE_IDS}
  (SELECT 1 FROM failed_requests f WHERE f.request_id = p.id AND f.reason <> $4 LIMIT 1) AS settled
UNION ALL
SELECT 'h', h.coupon_id, h.user_id FROM unnest($2::uuid[], $3::text[]) AS h(coupon_id, user_id)
  CROSS JOIN LATERAL (SELECT 1 FROM issue_requests r WHERE r.coupon_id = h.coupon_id
    AND r.user_id = h.user_id AND r.status = 'ISSUED' LIMIT 1) AS held
"""


async def seen_before(
    conn: Connection, request_ids: Sequence[UUID], pairs: Sequence[tuple[UUID, str]]
) -> tuple[set[UUID], set[tuple[UUID, str]]]:
    """Which of these requests already have their final outcome, and which of these (coupon,
    user) pairs already hold the coupon (one statement; see _SEEN_BEFORE)."""
    rows = await conn.fetch(
        _SEEN_BEFORE,
        request_ids,
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        FailReason.DEAD_LETTERED.value,
    )
    processed = {r["coupon_or_request"] for r in rows if r["kind"] == "p"}
    holders = {(r["coupon_or_request"], r["user_id"]) for r in rows if r["kind"] == "h"}
    return processed, holders


async def record_decisions(
    conn: Connection, decisions: Sequence[Decision], processed_at: datetime | None = None
) -> None:
    """Insert one row per decision in a single set-based statement."""
    if not decisions:
        return
    await conn.execute(
        "INSERT INTO issue_requests (request_id, coupon_id, user_id, status, reason, requested_at,"
        " processed_at)"
        " SELECT u.*, coalesce($7::timestamptz, now()) FROM unnest($1::uuid[], $2::uuid[],"
        " $3::text[], $4::text[], $5::text[], $6::timestamptz[]) AS u",
        [d.request.request_id for d in decisions],
        [d.request.coupon_id for d in decisions],
        [d.request.user_id for d in decisions],
        [d.status.value for d in decisions],
        [d.reason.value if d.reason else None for d in decisions],
        [d.request.requested_at for d in decisions],
        processed_at,
    )


# A batch's decisions and its coupons' counts in one statement (one round trip): a data-modifying
# WITH runs to completion whether or not the outer statement reads it, and a failure of either
# part (a duplicate request id, the CHECK that refuses over-issue) fails the statement.
_RECORD_BATCH = """
WITH decided AS (
  INSERT INTO issue_requests (request_id, coupon_id, user_id, status, reason, requested_at,
    processed_at)
  SELECT u.*, $7::timestamptz FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[],
    $5::text[], $6::timestamptz[]) AS u
)
UPDATE coupons c SET issued_quantity = c.issued_quantity + v.n
FROM unnest($8::uuid[], $9::int[]) AS v(id, n) WHERE c.id = v.id
"""


async def record_batch(
    conn: Connection,
    decisions: Sequence[Decision],
    processed_at: datetime,
    issued_per_coupon: Mapping[UUID, int],
) -> None:
    """Insert one row per decision and add the issues to each coupon's count (the CHECK
    refuses over-issue), in a single statement."""
    if not decisions and not issued_per_coupon:
        return
    await conn.execute(
        _RECORD_BATCH,
        [d.request.request_id for d in decisions],
        [d.request.coupon_id for d in decisions],
        [d.request.user_id for d in decisions],
        [d.status.value for d in decisions],
        [d.reason.value if d.reason else None for d in decisions],
        [d.request.requested_at for d in decisions],
        processed_at,
        list(issued_per_coupon.keys()),
        list(issued_per_coupon.values()),
    )
