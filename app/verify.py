"""The invariant checker behind ``coupon-issuer verify``: nothing over-issued, doubled or lost.

Per coupon it reads PostgreSQL (the truth), the Redis gate and the request topic / DLQ, and
reports figures plus every violation of:

- ``over_issue``: issued_quantity <= total_quantity;
- ``count_mismatch``: issued_quantity == number of ISSUED rows;
- ``double_issue``: no (coupon, user) twice among ISSUED rows;
- ``gate_missing_holder`` / ``gate_too_small`` / ``gate_total_mismatch``: when the gate is loaded,
  every holder is in its users set, the set is not smaller than the issued count, and its total
  equals the database's;
- ``lost_request``: every accepted request (a member of the gate's users set) has a row in
  ``issue_requests``, or is still in flight (its partition has lag), or is in the DLQ;
- ``unverifiable``: a system could not be read, so the checks above could not all be made.

Reads are ordered so that a live system does not produce false alarms: the database snapshot
before Redis for the holder check (a holder joins the gate before its row exists), and for the
lost-request check Redis members first, then topic lag, then outcomes (a request moving along the
pipeline meanwhile is seen further along, never missed). An API that dies between reserving a user
and the broker's ack leaves a reservation with no message: that is reported as lost, rightly.
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
import orjson
import redis.asyncio as aioredis
from aiokafka.partitioner import DefaultPartitioner

from app.adapters.redis_gate import RedisGate
from app.autoscaling.lag import TopicNotFound, read_lag
from app.config import Settings
from app.consumer.dlq import Entry, list_dead_letters
from app.domain.codec import DecodeError, decode

_KAFKA_TIMEOUT_S = 30.0

# --- read-only SQL (set-based, parameterised) ---------------------------------------------------
_COUPON_FIGURES = """
SELECT c.id, c.total_quantity, c.issued_quantity,
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


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant; ``coupon_id`` is None for a fault of the whole check."""

    check: str
    detail: str
    coupon_id: UUID | None = None


@dataclass(slots=True)
class CouponFigures:
    """What verify found for one coupon."""

    coupon_id: UUID
    total_quantity: int
    issued_quantity: int
    issued_rows: int
    double_issued: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    gate_loaded: bool = False
    gate_total: int | None = None
    gate_members: int = 0
    partition: int | None = None
    partition_lag: int | None = None
    accepted_without_outcome: int = 0
    in_flight: int = 0
    dead_lettered: int = 0
    lost: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass(slots=True)
class VerifyReport:
    """Per-coupon figures and every violation found; clean when ``violations`` is empty."""

    coupons: list[CouponFigures] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    partition_lag: dict[int, int] = field(default_factory=dict)
    dead_letters: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        coupons = []
        for c in self.coupons:
            doc = asdict(c)
            doc["coupon_id"] = str(c.coupon_id)
            doc["rejected_total"] = c.rejected_total
            coupons.append(doc)
        return {
            "ok": self.ok,
            "coupons": coupons,
            "violations": [
                {"check": v.check, "detail": v.detail, "coupon_id": _str_or_none(v.coupon_id)}
                for v in self.violations
            ],
            "partition_lag": {str(p): n for p, n in sorted(self.partition_lag.items())},
            "dead_letters": self.dead_letters,
            "notes": self.notes,
        }


@dataclass(slots=True)
class _GateState:
    loaded: bool
    total: int | None
    members: set[str]


@dataclass(slots=True)
class _TopicState:
    partitions: int
    lag: dict[int, int]
    dlq: list[Entry]


async def verify(settings: Settings, coupon_id: UUID | None) -> VerifyReport:
    """Check every coupon (or one) against the invariants; never writes anything."""
    report = VerifyReport()
    conn = await asyncpg.connect(
        settings.database_url,
        server_settings={"search_path": settings.db_schema, "application_name": "coupon-verify"},
    )
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            report.coupons = await _coupon_figures(conn, coupon_id)
            holders = await _holders(conn, [c.coupon_id for c in report.coupons])
        for figures in report.coupons:
            report.violations += check_database(figures)
        gates = await _read_gates(settings, [c.coupon_id for c in report.coupons], report)
        topic = await _read_topic(settings, report)
        candidates = {cid: gate.members - holders.get(cid, set()) for cid, gate in gates.items()}
        decided = await _users_with_outcome(conn, candidates)
    finally:
        await conn.close()
    for figures in report.coupons:
        gate = gates.get(figures.coupon_id)
        if gate is not None:
            report.violations += check_gate(figures, gate, holders.get(figures.coupon_id, set()))
            waiting = candidates[figures.coupon_id] - decided.get(figures.coupon_id, set())
            report.violations += _check_accepted(figures, waiting, topic, report)
    return report


# --- pure checks --------------------------------------------------------------------------------


def check_database(c: CouponFigures) -> list[Violation]:
    """Stock and uniqueness as PostgreSQL records them."""
    found = []
    if c.issued_quantity > c.total_quantity:
        found.append(
            Violation(
                "over_issue",
                f"issued_quantity {c.issued_quantity} > total_quantity {c.total_quantity}",
                c.coupon_id,
            )
        )
    if c.issued_quantity != c.issued_rows:
        found.append(
            Violation(
                "count_mismatch",
                f"issued_quantity {c.issued_quantity} != {c.issued_rows} ISSUED rows",
                c.coupon_id,
            )
        )
    if c.double_issued:
        found.append(
            Violation(
                "double_issue",
                f"{c.double_issued} ISSUED row(s) repeat a (coupon, user) pair",
                c.coupon_id,
            )
        )
    return found


def check_gate(c: CouponFigures, gate: _GateState, holders: set[str]) -> list[Violation]:
    """A loaded gate must know every holder and the coupon's real total."""
    c.gate_loaded, c.gate_total, c.gate_members = gate.loaded, gate.total, len(gate.members)
    if not gate.loaded:
        return []  # rebuilt from PostgreSQL on the next press; nothing to compare
    found = []
    missing = holders - gate.members
    if missing:
        found.append(
            Violation(
                "gate_missing_holder",
                f"{len(missing)} holder(s) not in the gate, e.g. {sorted(missing)[:3]}",
                c.coupon_id,
            )
        )
    if len(gate.members) < c.issued_rows:
        found.append(
            Violation(
                "gate_too_small",
                f"gate holds {len(gate.members)} user(s), {c.issued_rows} issued",
                c.coupon_id,
            )
        )
    if gate.total != c.total_quantity:
        found.append(
            Violation(
                "gate_total_mismatch",
                f"gate total {gate.total} != database total {c.total_quantity}",
                c.coupon_id,
            )
        )
    return found


def _check_accepted(
    c: CouponFigures, waiting: set[str], topic: _TopicState | None, report: VerifyReport
) -> list[Violation]:
    """Accepted users with no row: fine if in the DLQ or their partition still has lag."""
    c.accepted_without_outcome = len(waiting)
    if topic is None:
        c.dead_lettered = 0
        if waiting:
            return [
                Violation(
                    "unverifiable",
                    f"{len(waiting)} accepted request(s) without outcome; the broker could not"
                    " be read to tell in-flight from lost",
                    c.coupon_id,
                )
            ]
        return []
    key = str(c.coupon_id).encode()
    letters = [e for e in topic.dlq if e.letter.original_key == key]
    c.dead_lettered = len(letters)
    dead_users = {user for _, user in _dead_letter_users(letters)}
    if topic.partitions:
        every = list(range(topic.partitions))
        c.partition = int(DefaultPartitioner()(key, every, every))
        c.partition_lag = topic.lag.get(c.partition)
    in_dlq = waiting & dead_users
    rest = waiting - in_dlq
    if rest and (c.partition_lag or 0) > 0:
        c.in_flight = len(rest)
        return []
    c.lost = len(rest)
    if not rest:
        return []
    return [
        Violation(
            "lost_request",
            f"{len(rest)} accepted request(s) with no outcome, no lag on partition"
            f" {c.partition} and no dead letter, e.g. {sorted(rest)[:3]}",
            c.coupon_id,
        )
    ]


def _dead_letter_users(entries: Iterable[Entry]) -> list[tuple[UUID, str]]:
    found = []
    for entry in entries:
        try:
            request = decode(entry.letter.original_value)
        except DecodeError:
            continue  # poison bytes name no user; counted by key only
        found.append((request.coupon_id, request.user_id))
    return found


# --- reads --------------------------------------------------------------------------------------


async def _coupon_figures(conn: asyncpg.Connection, coupon_id: UUID | None) -> list[CouponFigures]:
    rejected: dict[UUID, dict[str, int]] = defaultdict(dict)
    for r in await conn.fetch(_REJECTED_BY_REASON, coupon_id):
        rejected[r["coupon_id"]][r["reason"]] = r["n"]
    return [
        CouponFigures(
            coupon_id=r["id"],
            total_quantity=r["total_quantity"],
            issued_quantity=r["issued_quantity"],
            issued_rows=r["issued_rows"],
            double_issued=r["issued_rows"] - r["issued_users"],
            rejected=rejected.get(r["id"], {}),
        )
        for r in await conn.fetch(_COUPON_FIGURES, coupon_id)
    ]


async def _holders(conn: asyncpg.Connection, coupon_ids: Sequence[UUID]) -> dict[UUID, set[str]]:
    holders: dict[UUID, set[str]] = defaultdict(set)
    for r in await conn.fetch(_HOLDERS, list(coupon_ids)):
        holders[r["coupon_id"]].add(r["user_id"])
    return holders


async def _users_with_outcome(
    conn: asyncpg.Connection, candidates: dict[UUID, set[str]]
) -> dict[UUID, set[str]]:
    """Which accepted users (not holders) have a row by now: a rejection is an outcome too."""
    pairs = [(cid, user) for cid, users in candidates.items() for user in users]
    decided: dict[UUID, set[str]] = defaultdict(set)
    if not pairs:
        return decided
    rows = await conn.fetch(
        _USERS_WITH_OUTCOME, [cid for cid, _ in pairs], [user for _, user in pairs]
    )
    for r in rows:
        decided[r["coupon_id"]].add(r["user_id"])
    return decided


async def _read_gates(
    settings: Settings, coupon_ids: Sequence[UUID], report: VerifyReport
) -> dict[UUID, _GateState]:
    """Each coupon's gate: meta total and every holder."""
    client = aioredis.from_url(settings.redis_url, socket_timeout=5)
    gate = RedisGate(client, settings.redis_prefix)
    states: dict[UUID, _GateState] = {}
    try:
        for cid in coupon_ids:
            snap = await gate.snapshot(cid)
            states[cid] = _GateState(snap.loaded, snap.total, set(snap.holders))
    except Exception as exc:  # Redis away: say so, do not guess
        report.violations.append(
            Violation("unverifiable", f"Redis at {settings.redis_url} could not be read: {exc!r}")
        )
        return {}
    finally:
        await client.aclose()
    return states


async def _read_topic(settings: Settings, report: VerifyReport) -> _TopicState | None:
    """Lag of the consumer group per partition of the request topic, and the dead letters."""
    try:
        async with asyncio.timeout(_KAFKA_TIMEOUT_S):
            try:
                snapshot = await read_lag(
                    settings.kafka_bootstrap, settings.topic, settings.consumer_group
                )
                lag = {p.partition: p.lag for p in snapshot.partitions}
            except TopicNotFound:
                lag = {}
            dlq = await list_dead_letters(settings.kafka_bootstrap, settings.dlq_topic)
    except Exception as exc:
        report.notes.append(f"broker at {settings.kafka_bootstrap} could not be read: {exc!r}")
        return None
    report.partition_lag = lag
    report.dead_letters = len(dlq)
    return _TopicState(len(lag), lag, dlq)


# --- the command --------------------------------------------------------------------------------


def run_verify(settings: Settings, coupon: str | None, as_json: bool) -> int:
    """``coupon-issuer verify [--coupon ID] [--json]``: 0 clean, 1 violations, 2 bad input."""
    coupon_id: UUID | None = None
    if coupon is not None:
        try:
            coupon_id = UUID(coupon)
        except ValueError:
            print(f"error: --coupon {coupon!r} is not a UUID", file=sys.stderr)
            return 2
    report = asyncio.run(verify(settings, coupon_id))
    if coupon_id is not None and not report.coupons:
        print(f"error: no coupon {coupon_id} in schema {settings.db_schema}", file=sys.stderr)
        return 2
    if as_json:
        print(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_table(report))
    return 0 if report.ok else 1


_COLUMNS = (
    ("coupon", 36),
    ("total", 8),
    ("issued", 8),
    ("rejected", 8),
    ("gate", 12),
    ("pending", 7),
    ("inflight", 8),
    ("dlq", 5),
    ("lost", 5),
)


def render_table(report: VerifyReport) -> str:
    """One line per coupon, then the violations, then a one-line verdict."""
    lines = ["  ".join(name.rjust(width) for name, width in _COLUMNS)]
    for c in report.coupons:
        gate = f"{c.gate_members}/{c.gate_total}" if c.gate_loaded else "not loaded"
        cells = (
            str(c.coupon_id),
            str(c.total_quantity),
            str(c.issued_quantity),
            str(c.rejected_total),
            gate,
            str(c.accepted_without_outcome),
            str(c.in_flight),
            str(c.dead_lettered),
            str(c.lost),
        )
        lines.append("  ".join(v.rjust(w) for v, (_, w) in zip(cells, _COLUMNS, strict=True)))
    for v in report.violations:
        lines.append(f"VIOLATION {v.check} [{_str_or_none(v.coupon_id) or '-'}]: {v.detail}")
    lines += [f"note: {n}" for n in report.notes]
    verdict = "OK" if report.ok else "FAILED"
    lines.append(
        f"{verdict}: {len(report.coupons)} coupon(s), {len(report.violations)} violation(s),"
        f" {report.dead_letters} dead letter(s), lag {sum(report.partition_lag.values())}"
    )
    return "\n".join(lines)


def _str_or_none(value: UUID | None) -> str | None:
    return None if value is None else str(value)
