"""The bench's outcome checks against the session's PostgreSQL.

- the wrk phases' row check (`bench.api_limits._wait_rows`): a fast API leaves one consumer a
  backlog to drain after wrk stops; the check waits for as long as rows keep coming, and calls
  presses missing only when the rows stop short of the 202s;
- the sale's check (`bench.db.check`): a 202 whose publish was acknowledged needs its row; one
  answered UNCONFIRMED needs its row (it landed) or the reconciler's FAILED outcome (it never
  did), and a user whose unconfirmed press never landed is not expected to hold the coupon.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

import asyncpg
import pytest

from app.adapters.postgres_setup import apply_migrations
from bench import api_limits, db
from bench.api_limits import Variant, _wait_rows
from tests.stack import isolated_settings

_POLL_S = 0.1
_STALL_S = 1.0


class _Drain:
    """Writes a chunk of request rows each time the check has counted the ones before it."""

    def __init__(self, conn: asyncpg.Connection, chunk: int) -> None:
        self._conn = conn
        self._chunk = chunk
        self.counted = asyncio.Event()

    def shown(self, rows: int) -> None:
        self.counted.set()

    async def write(self, chunks: int) -> None:
        coupon = uuid.uuid4()
        for _ in range(chunks):
            await self.counted.wait()
            self.counted.clear()
            await self._conn.executemany(
                "INSERT INTO issue_requests (request_id, coupon_id, user_id, status, reason,"
                " requested_at) VALUES ($1, $2, $3, 'REJECTED', 'SOLD_OUT', $4)",
                [(uuid.uuid4(), coupon, f"u{n}", datetime.now(UTC)) for n in range(self._chunk)],
            )


async def _check(accepted: int, chunks: int, chunk: int) -> dict[str, object]:
    settings = isolated_settings("127.0.0.1:9")  # no broker: rows only
    await apply_migrations(settings.database_url, settings.db_schema)
    variant = cast(Variant, SimpleNamespace(settings=settings, accepted=accepted, cut_off=0))
    conn = await db.connect(settings.database_url, settings.db_schema)
    try:
        drain = _Drain(conn, chunk)
        writer = asyncio.create_task(drain.write(chunks))
        result = await _wait_rows(variant, _STALL_S, drain.shown)
        writer.cancel()
        return result
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_limits, "_ROWS_POLL_S", _POLL_S)


async def test_a_drain_that_keeps_moving_is_waited_for_past_the_stall_timeout() -> None:
    chunks = 15  # each needs a poll after the one that counted the chunk before
    result = await _check(accepted=chunks * 10, chunks=chunks, chunk=10)
    assert result["ok"] and result["rows"] == chunks * 10, result
    assert result["backlog_at_end"] == chunks * 10  # none there when the check began
    assert cast(float, result["drain_s"]) > _STALL_S, result  # a fixed timeout had given up


async def test_rows_that_stop_short_of_the_202s_are_reported_missing() -> None:
    result = await _check(accepted=30, chunks=2, chunk=10)
    assert not result["ok"] and result["rows"] == 20, result
    assert result["in_flight_at_deadline"] == -10


async def test_an_unconfirmed_press_has_an_outcome_when_it_landed_or_was_settled_failed() -> None:
    settings = isolated_settings("127.0.0.1:9")
    await apply_migrations(settings.database_url, settings.db_schema)
    coupon = uuid.uuid4()
    queued, landed, landed_too, settled, stranded = (str(uuid.uuid4()) for _ in range(5))
    conn = await db.connect(settings.database_url, settings.db_schema)
    try:
        await conn.execute(
            "INSERT INTO coupons (id, name, discount_type, discount_value, total_quantity,"
            " issued_quantity, min_order_amount, expires_at)"
            " VALUES ($1, 'bench check', 'FIXED', 1, 10, 3, 0, now() + interval '1 hour')",
            coupon,
        )
        await conn.executemany(
            "INSERT INTO issue_requests (request_id, coupon_id, user_id, status, requested_at)"
            " VALUES ($1, $2, $3, 'ISSUED', now())",
            [
                (uuid.UUID(queued), coupon, "bench-u1"),
                (uuid.UUID(landed), coupon, "bench-u2"),
                (uuid.UUID(landed_too), coupon, "bench-u4"),
            ],
        )
        await conn.execute(
            "INSERT INTO failed_requests (request_id, coupon_id, user_id, reason)"
            " VALUES ($1, $2, 'bench-u3', 'NOT_QUEUED')",
            uuid.UUID(settled),
            coupon,
        )
        # user 3 was also told DUPLICATE by a second press: still holds nothing
        deciders = {str(coupon): {1, 3}}
        unconfirmed = {
            landed: (str(coupon), 2),
            landed_too: (str(coupon), 4),
            settled: (str(coupon), 3),
        }

        outcome = await db.check(conn, 10, deciders, [queued], unconfirmed)
        assert outcome.ok, outcome.as_dict()
        # users 1 (decided), 2 and 4 (landed); not 3 (never landed)
        assert (outcome.issued, outcome.expected_issued) == (3, 3)
        assert (outcome.accepted, outcome.unconfirmed, outcome.unconfirmed_failed) == (4, 3, 1)

        # a stock of 4 sold out while user 3's press held a unit (users 5 and 6 were told
        # SOLD_OUT): 3 issued, one fewer than the users, until the reconciler gives it back
        sold_out = {str(coupon): {1, 3, 5, 6}}
        outcome = await db.check(conn, 4, sold_out, [queued], unconfirmed)
        assert outcome.ok, outcome.as_dict()
        assert (outcome.issued, outcome.expected_issued_least, outcome.expected_issued) == (3, 3, 4)

        # an unconfirmed press with neither a row nor a FAILED outcome has none
        outcome = await db.check(
            conn, 10, deciders, [queued], {**unconfirmed, stranded: (str(coupon), 4)}
        )
        assert not outcome.ok and outcome.accepted_without_outcome == 1, outcome.as_dict()
        # and a press whose publish was acknowledged needs its row, whatever else holds
        outcome = await db.check(conn, 10, deciders, [queued, stranded], unconfirmed)
        assert not outcome.ok and outcome.accepted_without_outcome == 1, outcome.as_dict()
    finally:
        await conn.close()
