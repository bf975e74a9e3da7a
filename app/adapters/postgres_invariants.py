"""PostgreSQL's invariant reads (``coupon-issuer verify``): read-only and set-based, apart from the
service's own statements in postgres.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

from asyncpg import Connection, Record

_COUPON_FIGURES = """
SELECT c.id, c.total_quantity, c.issued_quantity, c.partition,
       count(r.request_id) FILTER (WHERE r.status = 'ISSUED') AS issued_rows,
       count(DISTINCT r.user_id) FILTER (WHERE r.status = 'ISSUED') AS issued_users
FROM coupons c LEFT JOIN issue_requests r ON r.coupon_id = c.id
WHERE $1::uuid IS NULL OR c.id = $1::uuid
GROUP BY c.id
ORDER BY c.created_at, c.id
"""
_REJECTED_BY_REASON = """
SELECT coupon_id, coalesce(reason, 'UNKNOWN') AS reason, count(*) AS n
FROM issue_requests
WHERE status = 'REJECTED' AND ($1::uuid IS NULL OR coupon_id = $1::uuid)
GROUP BY 1, 2
"""
_HOLDERS = """
SELECT coupon_id, user_id FROM issue_requests
WHERE status = 'ISSUED' AND coupon_id = ANY($1::uuid[])
"""
_USERS_WITH_OUTCOME = """
SELECT DISTINCT r.coupon_id, r.user_id
FROM issue_requests r
JOIN unnest($1::uuid[], $2::text[]) AS p(coupon_id, user_id)
  ON r.coupon_id = p.coupon_id AND r.user_id = p.user_id
"""


async def coupon_figure_rows(conn: Connection, coupon_id: UUID | None) -> list[Record]:
    """Per coupon: total, issued count, ISSUED rows and distinct holders (all coupons if None)."""
    return list(await conn.fetch(_COUPON_FIGURES, coupon_id))


async def rejected_by_reason(
    conn: Connection, coupon_id: UUID | None
) -> dict[UUID, dict[str, int]]:
    found: dict[UUID, dict[str, int]] = {}
    for r in await conn.fetch(_REJECTED_BY_REASON, coupon_id):
        found.setdefault(r["coupon_id"], {})[r["reason"]] = r["n"]
    return found


async def holders_by_coupon(conn: Connection, coupon_ids: Sequence[UUID]) -> dict[UUID, set[str]]:
    found: dict[UUID, set[str]] = {}
    for r in await conn.fetch(_HOLDERS, list(coupon_ids)):
        found.setdefault(r["coupon_id"], set()).add(r["user_id"])
    return found


async def users_with_outcome(
    conn: Connection, candidates: Mapping[UUID, set[str]]
) -> dict[UUID, set[str]]:
    """Which of these (coupon, user) pairs have any row by now (a rejection is an outcome)."""
    pairs = [(cid, user) for cid, users in candidates.items() for user in users]
    found: dict[UUID, set[str]] = {}
    if not pairs:
        return found
    rows = await conn.fetch(_USERS_WITH_OUTCOME, [c for c, _ in pairs], [u for _, u in pairs])
    for r in rows:
        found.setdefault(r["coupon_id"], set()).add(r["user_id"])
    return found
