"""The bench's own reads of PostgreSQL: progress, end-to-end latency and the correctness check.

These are measurement queries over the service's tables (read-only, except for the scratch and
bench schemas the run creates and drops); the service's own SQL stays in adapters/postgres.py.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from app.adapters import postgres, postgres_setup
from harness.coupons import sale_coupon


async def connect(dsn: str, schema: str) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn, server_settings={"search_path": schema, "application_name": "coupon-bench"}
    )
    return conn


async def create_schema_with_coupons(
    dsn: str, schema: str, coupon_ids: Sequence[str], stock: int
) -> None:
    """Migrate ``schema`` and insert the coupons directly (for runs that bypass the API)."""
    await postgres_setup.apply_migrations(dsn, schema)
    conn = await connect(dsn, schema)
    try:
        for cid in coupon_ids:
            coupon = sale_coupon(stock, "bench", coupon_id=uuid.UUID(cid))
            await postgres.insert_coupon(conn, coupon)
    finally:
        await conn.close()


async def drop_schemas(dsn: str, schemas: Sequence[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for schema in schemas:
            quoted = '"' + schema.replace('"', '""') + '"'
            await conn.execute(f"DROP SCHEMA IF EXISTS {quoted} CASCADE")
    finally:
        await conn.close()


async def processed_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM issue_requests"))


async def end_to_end_ms(conn: asyncpg.Connection) -> dict[str, float]:
    """Accepted press to final outcome in PostgreSQL (processed_at - requested_at), in ms."""
    row = await conn.fetchrow(
        "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY d) AS p,"
        " max(d) AS mx FROM (SELECT extract(epoch FROM processed_at - requested_at) * 1000 AS d"
        " FROM issue_requests) s"
    )
    if row is None or row["p"] is None:
        return {}
    p50, p95, p99 = (float(x) for x in row["p"])
    return {"p50": p50, "p95": p95, "p99": p99, "max": float(row["mx"])}


async def batch_throughput(conn: asyncpg.Connection) -> float:
    """Rows per second between the first and the last batch transaction (``processed_at`` is
    the transaction's start), not counting the first batch's rows."""
    row = await conn.fetchrow(
        "WITH b AS (SELECT min(processed_at) AS t0, max(processed_at) AS t1 FROM issue_requests)"
        " SELECT extract(epoch FROM b.t1 - b.t0) AS span,"
        " (SELECT count(*) FROM issue_requests, b WHERE processed_at > b.t0) AS n FROM b"
    )
    if row is None or not row["span"]:
        return 0.0
    return float(row["n"]) / float(row["span"])


async def failed_count(conn: asyncpg.Connection) -> int:
    """Requests with a FAILED outcome (dead-lettered, or settled by the reconciler)."""
    return int(await conn.fetchval("SELECT count(*) FROM failed_requests"))


async def processed_span_s(conn: asyncpg.Connection) -> float:
    """Seconds between the first and the last batch transaction that wrote a row."""
    span = await conn.fetchval(
        "SELECT extract(epoch FROM max(processed_at) - min(processed_at)) FROM issue_requests"
    )
    return float(span or 0.0)


@dataclass
class Correctness:
    """The invariants a flash sale must keep, checked against PostgreSQL after the drain."""

    issued: int
    expected_issued: int  # min(stock, distinct users), summed over the coupons
    # less the units unconfirmed presses that never landed held while their coupon sold out
    expected_issued_least: int
    coupons_off_expected: int
    duplicate_holders: int
    over_issued_coupons: int
    counter_mismatches: int
    accepted: int
    accepted_without_outcome: int
    unconfirmed: int = 0  # 202s whose publish was not acknowledged in time
    unconfirmed_failed: int = 0  # of those, never landed: settled FAILED by the reconciler
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.expected_issued_least <= self.issued <= self.expected_issued
            and self.coupons_off_expected == 0
            and self.duplicate_holders == 0
            and self.over_issued_coupons == 0
            and self.counter_mismatches == 0
            and self.accepted_without_outcome == 0
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "issued": self.issued,
            "expected_issued": self.expected_issued,
            "expected_issued_least": self.expected_issued_least,
            "coupons_off_expected": self.coupons_off_expected,
            "duplicate_holders": self.duplicate_holders,
            "over_issued_coupons": self.over_issued_coupons,
            "counter_mismatches": self.counter_mismatches,
            "accepted": self.accepted,
            "accepted_without_outcome": self.accepted_without_outcome,
            "unconfirmed": self.unconfirmed,
            "unconfirmed_failed": self.unconfirmed_failed,
            "outcomes": self.outcomes,
        }


async def accepted_without_outcome(conn: asyncpg.Connection, request_ids: Sequence[str]) -> int:
    n = await conn.fetchval(
        "SELECT count(*) FROM unnest($1::uuid[]) AS a(id)"
        " WHERE NOT EXISTS (SELECT 1 FROM issue_requests r WHERE r.request_id = a.id)",
        list(request_ids),
    )
    return int(n)


async def _unconfirmed_fates(
    conn: asyncpg.Connection, request_ids: Sequence[str]
) -> tuple[set[str], set[str]]:
    """(those that landed: a row in issue_requests; those settled FAILED: a failed_requests
    row and none in issue_requests)."""
    rows = await conn.fetch(
        "SELECT a.id::text AS id,"
        " EXISTS (SELECT 1 FROM issue_requests r WHERE r.request_id = a.id) AS landed,"
        " EXISTS (SELECT 1 FROM failed_requests f WHERE f.request_id = a.id) AS failed"
        " FROM unnest($1::uuid[]) AS a(id)",
        list(request_ids),
    )
    landed = {r["id"] for r in rows if r["landed"]}
    return landed, {r["id"] for r in rows if r["failed"] and not r["landed"]}


def expected_issued(
    stock: int,
    deciders: Mapping[str, set[int]],
    unconfirmed: Mapping[str, tuple[str, int]],
    landed: set[str],
) -> dict[str, tuple[int, int]]:
    """Per coupon, the least and the most it may have issued: min(stock, distinct users), those
    the gate decided for and those whose unconfirmed press landed. A user whose unconfirmed
    press never landed holds nothing (the reconciler settles it FAILED), whatever a later press
    of theirs was told; and until the reconciler gives its unit back (after
    ``reconcile_min_age_s``), the gate counted it as taken: a coupon that sold out meanwhile
    issues that many fewer."""
    users = {coupon: set(decided) for coupon, decided in deciders.items()}
    held: Counter[str] = Counter()  # units held by unconfirmed presses that never landed
    for request_id, (coupon, user) in unconfirmed.items():
        if request_id in landed:
            users.setdefault(coupon, set()).add(user)
        else:
            users.setdefault(coupon, set()).discard(user)
            held[coupon] += 1
    return {
        coupon: (min(stock - held[coupon], len(who)), min(stock, len(who)))
        for coupon, who in users.items()
    }


async def check(
    conn: asyncpg.Connection,
    stock: int,
    deciders: Mapping[str, set[int]],
    accepted_ids: Sequence[str],
    unconfirmed: Mapping[str, tuple[str, int]] | None = None,
) -> Correctness:
    """issued = min(stock, distinct users) per coupon (less the units a never-landed unconfirmed
    press held, see ``expected_issued``), no duplicates, every accepted answered.

    ``accepted_ids`` are the 202s whose publish was acknowledged: each needs its row.
    ``unconfirmed`` (request id -> coupon, user) are the 202s whose publish was not acknowledged
    in time: each needs its row (it landed) or a FAILED outcome (the reconciler settled it)."""
    unconfirmed = unconfirmed or {}
    landed, settled = await _unconfirmed_fates(conn, list(unconfirmed))
    expected_per_coupon = expected_issued(stock, deciders, unconfirmed, landed)
    issued_rows = await conn.fetch(
        "SELECT coupon_id::text AS c, count(*) AS n FROM issue_requests"
        " WHERE status = 'ISSUED' GROUP BY 1"
    )
    issued = {r["c"]: int(r["n"]) for r in issued_rows}
    duplicates = await conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM issue_requests WHERE status = 'ISSUED'"
        " GROUP BY coupon_id, user_id HAVING count(*) > 1) d"
    )
    over = await conn.fetchval(
        "SELECT count(*) FROM coupons WHERE issued_quantity > total_quantity"
    )
    counters = await conn.fetchval(
        "SELECT count(*) FROM coupons c WHERE c.issued_quantity <> (SELECT count(*)"
        " FROM issue_requests r WHERE r.coupon_id = c.id AND r.status = 'ISSUED')"
    )
    outcome_rows = await conn.fetch(
        "SELECT coalesce(reason, status) AS o, count(*) AS n FROM issue_requests GROUP BY 1"
    )
    return Correctness(
        issued=sum(issued.values()),
        expected_issued=sum(most for _, most in expected_per_coupon.values()),
        expected_issued_least=sum(least for least, _ in expected_per_coupon.values()),
        coupons_off_expected=sum(
            1
            for cid, (least, most) in expected_per_coupon.items()
            if not least <= issued.get(cid, 0) <= most
        ),
        duplicate_holders=int(duplicates),
        over_issued_coupons=int(over),
        counter_mismatches=int(counters),
        accepted=len(accepted_ids) + len(unconfirmed),
        accepted_without_outcome=await accepted_without_outcome(conn, accepted_ids)
        + len(unconfirmed)
        - len(landed)
        - len(settled),
        unconfirmed=len(unconfirmed),
        unconfirmed_failed=len(settled),
        outcomes={r["o"]: int(r["n"]) for r in outcome_rows},
    )
