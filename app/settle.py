"""Settling requests that end FAILED: ``settle_failed``, the one place that records the failure
in PostgreSQL, writes the user's outcome to Redis and gives the reservation back. The consumer
calls it for a dead letter, the reconciler for stranded reservations, a chunk at a time: bounded,
resumable, one log line per coupon.

PostgreSQL first (one set-based insert for the whole batch), then one Redis round trip writes each
outcome and gives each reservation back (app/adapters/redis_gate.py, ``settle``). A reservation is
therefore never given back without its outcome recorded: a chunk cut short (a stop, a fault, a
cancel) leaves reservations still held, found again and settled by the next pass, idempotently.
The stop event is read between chunks, so a pass stops within one chunk's time however large the
backlog.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

import asyncpg

from app.adapters import postgres
from app.adapters.redis_gate import RedisGate
from app.domain.outcomes import FailReason
from app.domain.settlement import FAILURE_DETAILS, FailedRequest, Reservation, Settled
from app.domain.status import RecordedOutcome
from app.observability import metrics

log = logging.getLogger(__name__)
R = TypeVar("R")
Recorded = dict[UUID, RecordedOutcome]

CHUNK = 1000  # reservations per statement and per Redis round trip
_EXAMPLES = 3  # request ids named in a coupon's summary line


async def settle_stranded(
    pool: asyncpg.Pool,
    gate: RedisGate,
    stranded: Sequence[tuple[Reservation, FailReason]],
    stop: asyncio.Event,
) -> tuple[list[Settled], bool]:
    """Settle these reservations in chunks of ``CHUNK``; returns those given back, and whether
    ``stop`` cut the work short (the rest stays held for the next pass)."""
    settled: list[Settled] = []
    done = 0  # reservations handled (given back here, or found settled by someone else)
    try:
        for start in range(0, len(stranded), CHUNK):
            if stop.is_set():
                break
            chunk = stranded[start : start + CHUNK]
            settled.extend(await _settle_chunk(pool, gate, chunk))
            done += len(chunk)
    finally:  # a pass stopped or cancelled midway still says what it did
        _log_summaries(settled)
        if done < len(stranded):
            log.warning(
                "reconciler: stopped mid-pass, %d stranded reservation(s) left for the next pass",
                len(stranded) - done,
            )
    return settled, done < len(stranded)


class OutcomesNotWritten(Exception):
    """PostgreSQL recorded the failures but Redis could not be told: the reservations stay held
    (the reconciler's next pass settles them)."""


async def _once(operation: Callable[[], Awaitable[R]]) -> R:
    return await operation()


async def settle_failed(
    pool: asyncpg.Pool,
    gate: RedisGate,
    failures: Sequence[FailedRequest],
    *,
    db_calls: Callable[[Callable[[], Awaitable[Recorded]]], Awaitable[Recorded]] = _once,
    tell_if_released: bool = False,
) -> list[Settled]:
    """Record these failures in PostgreSQL, then write each outcome to Redis and give each
    reservation back; returns those given back here.

    ``db_calls`` runs the PostgreSQL write (the consumer passes its retry policy: it waits out a
    database fault). A reservation no longer held by its request was settled by someone else,
    who wrote its outcome; with ``tell_if_released`` (a dead letter: its gate may have been
    rebuilt without the reservation) its outcome is written all the same, never over ISSUED.
    Raises :class:`OutcomesNotWritten` if Redis fails after PostgreSQL recorded them.
    """

    async def record() -> Recorded:
        async with pool.acquire() as conn:
            return await postgres.record_failures(conn, failures)

    recorded = await db_calls(record)
    # Redis is told what PostgreSQL now holds (an earlier failure under another reason is kept).
    told = [(f.coupon_id, f.user_id, recorded[f.request_id]) for f in failures]
    try:
        released = await gate.settle(told)
        if tell_if_released and not all(released):
            await gate.record_outcomes(
                t for t, given_back in zip(told, released, strict=True) if not given_back
            )
    except Exception as exc:
        raise OutcomesNotWritten(f"outcomes recorded in PostgreSQL only: {exc!r}") from exc
    return [
        Settled(coupon_id, user_id, outcome.request_id, FailReason(str(outcome.reason)))
        for (coupon_id, user_id, outcome), given_back in zip(told, released, strict=True)
        if given_back
    ]


async def _settle_chunk(
    pool: asyncpg.Pool, gate: RedisGate, chunk: Sequence[tuple[Reservation, FailReason]]
) -> list[Settled]:
    at = datetime.now(UTC)
    failures = [
        FailedRequest(r.request_id, r.coupon_id, r.user_id, reason, FAILURE_DETAILS[reason], at)
        for r, reason in chunk
    ]
    done = await settle_failed(pool, gate, failures)
    metrics.RECONCILER_RELEASED.inc(len(done))
    return done


def _log_summaries(settled: Sequence[Settled]) -> None:
    """One line per coupon: how many, for which reasons, and a few request ids to look up."""
    by_coupon: dict[UUID, list[Settled]] = {}
    for s in settled:
        by_coupon.setdefault(s.coupon_id, []).append(s)
    for coupon_id, items in by_coupon.items():
        reasons = Counter(s.reason.value for s in items)
        log.warning(
            "reconciler: coupon %s: released %d stranded reservation(s) as FAILED (%s);"
            " e.g. requests %s",
            coupon_id,
            len(items),
            ", ".join(f"{reason} {n}" for reason, n in reasons.most_common()),
            ", ".join(str(s.request_id) for s in items[:_EXAMPLES]),
        )
