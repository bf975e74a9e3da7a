"""The invariant checker behind ``coupon-issuer verify``: nothing over-issued, doubled or lost.

Per coupon it reads PostgreSQL (the truth), the Redis gate and the request topic / DLQ, and
reports figures plus every violation of:

- ``over_issue``: issued_quantity <= total_quantity;
- ``count_mismatch``: issued_quantity == number of ISSUED rows;
- ``double_issue``: no (coupon, user) twice among ISSUED rows;
- ``gate_missing_holder`` / ``gate_too_small`` / ``gate_total_mismatch``: when the gate is loaded,
  every holder is in its holders, the set is not smaller than the issued count, and its total
  equals the database's;
- ``stranded_reservation``: every accepted request (a holder in the gate) has a row in
  ``issue_requests``, or is still in flight (its partition has lag, or it is younger than
  ``reconcile_min_age_s`` and may still be publishing), or is in the DLQ;
- ``unverifiable``: a system could not be read, so the checks above could not all be made.

Reads are ordered so that a live system does not produce false alarms: the database snapshot
before Redis for the holder check (a holder joins the gate before its row exists), and for the
lost-request check Redis members first, then topic lag, then outcomes (a request moving along the
pipeline meanwhile is seen further along, never missed). An API that dies between reserving a user
and the broker's ack leaves a reservation with no message: that is reported as stranded, rightly,
until ``coupon-issuer reconcile`` settles it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import orjson

from app.adapters import postgres_invariants, postgres_setup, redis_client
from app.adapters.dead_letters import list_dead_letters
from app.adapters.kafka import coupon_partition
from app.adapters.kafka_lag import TopicNotFound, read_lag
from app.adapters.redis_gate import RedisGate
from app.config import Settings
from app.domain.codec import DecodeError, decode
from app.domain.dead_letter import Entry
from app.domain.invariants import (
    CouponFigures,
    GateState,
    VerifyReport,
    Violation,
    check_accepted,
    check_database,
    check_gate,
)
from app.domain.request_ids import created_at

_KAFKA_TIMEOUT_S = 30.0


@dataclass(slots=True)
class _TopicState:
    partitions: int
    lag: dict[int, int]
    dlq: list[Entry]


async def verify(settings: Settings, coupon_id: UUID | None) -> VerifyReport:
    """Check every coupon (or one) against the invariants; never writes anything."""
    report = VerifyReport()
    conn = await postgres_setup.connect(settings.database_url, settings.db_schema, "coupon-verify")
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            report.coupons = await _coupon_figures(conn, coupon_id)
            holders = await postgres_invariants.holders_by_coupon(
                conn, [c.coupon_id for c in report.coupons]
            )
        for figures in report.coupons:
            report.violations += check_database(figures)
        gates = await _read_gates(settings, [c.coupon_id for c in report.coupons], report)
        topic = await _read_topic(settings, report)
        candidates = {cid: gate.members - holders.get(cid, set()) for cid, gate in gates.items()}
        decided = await postgres_invariants.users_with_outcome(conn, candidates)
    finally:
        await conn.close()
    for figures in report.coupons:
        gate = gates.get(figures.coupon_id)
        if gate is not None:
            figures.gate_loaded, figures.gate_total = gate.loaded, gate.total
            figures.gate_members = len(gate.members)
            report.violations += check_gate(figures, gate, holders.get(figures.coupon_id, set()))
            waiting = candidates[figures.coupon_id] - decided.get(figures.coupon_id, set())
            report.violations += _check_accepted(figures, waiting, gate.young, topic)
    return report


def _check_accepted(
    c: CouponFigures, waiting: set[str], young: set[str], topic: _TopicState | None
) -> list[Violation]:
    """Where the coupon's requests live on the topic, then the pure check; fills the figures."""
    dead: set[str] | None = None
    if topic is not None:
        key = str(c.coupon_id).encode()
        letters = [e for e in topic.dlq if e.letter.original_key == key]
        c.dead_lettered = len(letters)
        if topic.partitions:
            c.partition = coupon_partition(c.coupon_id, c.partition, topic.partitions)
            c.partition_lag = topic.lag.get(c.partition)
        dead = {user for _, user in _dead_letter_users(letters)}
    found = check_accepted(c.coupon_id, waiting, young, dead, c.partition, c.partition_lag)
    c.accepted_without_outcome, c.in_flight = found.accepted_without_outcome, found.in_flight
    c.stranded = found.stranded
    return found.violations


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
    rejected = await postgres_invariants.rejected_by_reason(conn, coupon_id)
    return [
        CouponFigures(
            coupon_id=r["id"],
            total_quantity=r["total_quantity"],
            issued_quantity=r["issued_quantity"],
            issued_rows=r["issued_rows"],
            double_issued=r["issued_rows"] - r["issued_users"],
            rejected=rejected.get(r["id"], {}),
            partition=r["partition"],
        )
        for r in await postgres_invariants.coupon_figure_rows(conn, coupon_id)
    ]


async def _read_gates(
    settings: Settings, coupon_ids: Sequence[UUID], report: VerifyReport
) -> dict[UUID, GateState]:
    """Each coupon's gate: meta total and every holder."""
    client = redis_client.connect(settings, socket_timeout=5)
    gate = RedisGate(client, settings.redis_prefix)
    states: dict[UUID, GateState] = {}
    now = datetime.now(UTC)
    min_age = timedelta(seconds=settings.reconcile_min_age_s)
    try:
        for cid in coupon_ids:
            snap = await gate.snapshot(cid)
            young = {u for u, request in snap.holders.items() if _younger(request, now, min_age)}
            states[cid] = GateState(snap.loaded, snap.total, set(snap.holders), young)
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


def _younger(request_id: str, now: datetime, min_age: timedelta) -> bool:
    try:
        made = created_at(UUID(request_id))
    except ValueError:
        return False
    return made is not None and now - made < min_age


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
    ("stranded", 8),
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
            str(c.stranded),
        )
        lines.append("  ".join(v.rjust(w) for v, (_, w) in zip(cells, _COLUMNS, strict=True)))
    for v in report.violations:
        lines.append(f"VIOLATION {v.check} [{v.coupon_id or '-'}]: {v.detail}")
    lines += [f"note: {n}" for n in report.notes]
    verdict = "OK" if report.ok else "FAILED"
    lines.append(
        f"{verdict}: {len(report.coupons)} coupon(s), {len(report.violations)} violation(s),"
        f" {report.dead_letters} dead letter(s), lag {sum(report.partition_lag.values())}"
    )
    return "\n".join(lines)
