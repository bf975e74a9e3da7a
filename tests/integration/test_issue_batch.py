"""One batch's transaction against the session's PostgreSQL and Redis (no broker): what it reads
before deciding and what it writes, each in one statement, and the Redis updates after it.

- a batch skips what was decided or settled before it, issues a dead letter's replay, refuses a
  user who already holds the coupon and stops at the stock; rows and the coupon's count agree;
- a batch that would over-issue writes nothing (the rows and the count are one statement);
- the consumer's pool does not reset a connection it gets back, but a transaction left open on
  it is still rolled back;
- the batch's Redis updates: counters, holders, outcomes, then one announcement per coupon, also
  when Redis has lost its scripts.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
import pytest_asyncio

from app.adapters import postgres, postgres_setup, redis_client
from app.adapters.postgres_setup import apply_migrations
from app.adapters.redis_gate import RedisGate, decode_outcome
from app.config import Settings
from app.consumer.issue import issue_batch
from app.domain.codec import IssueRequest
from app.domain.decision import Decision
from app.domain.outcomes import FailReason, IssueStatus, RejectReason
from app.domain.request_ids import new_request_id
from app.domain.settlement import FailedRequest
from app.domain.status import RecordedOutcome
from harness import wait_until
from harness.coupons import sale_coupon
from tests.stack import isolated_settings


@pytest_asyncio.fixture
async def settings() -> Settings:
    # No broker: the batch's transaction and its Redis updates only (the name is never dialled).
    own = isolated_settings("127.0.0.1:9")
    await apply_migrations(own.database_url, own.db_schema)
    return own


@pytest_asyncio.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    # As the consumer opens it: no session reset when a connection is given back.
    opened = await postgres_setup.create_pool(
        settings.database_url, settings.db_schema, 1, reset_sessions=False
    )
    try:
        yield opened
    finally:
        await opened.close()


async def _coupon(pool: asyncpg.Pool, total: int) -> uuid.UUID:
    coupon = sale_coupon(total, "batch test")
    async with pool.acquire() as conn:
        await postgres.insert_coupon(conn, coupon)
    return coupon.id


def _press(coupon_id: uuid.UUID, user: str) -> IssueRequest:
    return IssueRequest(coupon_id, user, new_request_id(), datetime.now(UTC))


async def _rows(pool: asyncpg.Pool, coupon_id: uuid.UUID) -> dict[uuid.UUID, tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT request_id, status, coalesce(reason, '') AS reason FROM issue_requests"
        " WHERE coupon_id = $1",
        coupon_id,
    )
    return {r["request_id"]: (r["status"], r["reason"]) for r in rows}


async def _issued_quantity(pool: asyncpg.Pool, coupon_id: uuid.UUID) -> int:
    count: int = await pool.fetchval("SELECT issued_quantity FROM coupons WHERE id = $1", coupon_id)
    return count


async def _fail(pool: asyncpg.Pool, press: IssueRequest, reason: FailReason) -> None:
    failure = FailedRequest(
        press.request_id, press.coupon_id, press.user_id, reason, "test", datetime.now(UTC)
    )
    async with pool.acquire() as conn:
        await postgres.record_failures(conn, [failure])


async def test_a_batch_decides_against_what_was_decided_or_settled_before_it(
    pool: asyncpg.Pool,
) -> None:
    coupon_id = await _coupon(pool, 3)
    alice = _press(coupon_id, "alice")
    await issue_batch(pool, [alice])
    settled = _press(coupon_id, "bob")  # the reconciler told bob FAILED: final
    await _fail(pool, settled, FailReason.NOT_QUEUED)
    replayed = _press(coupon_id, "carol")  # a dead letter: a replay may still issue it
    await _fail(pool, replayed, FailReason.DEAD_LETTERED)
    alice_again = _press(coupon_id, "alice")
    dave, erin = _press(coupon_id, "dave"), _press(coupon_id, "erin")

    plan = await issue_batch(pool, [alice, alice_again, settled, replayed, dave, erin])

    assert plan.already_processed == 2  # alice's redelivery and bob's settled press
    rows = await _rows(pool, coupon_id)
    assert rows == {
        alice.request_id: ("ISSUED", ""),
        alice_again.request_id: ("REJECTED", RejectReason.DUPLICATE.value),
        replayed.request_id: ("ISSUED", ""),
        dave.request_id: ("ISSUED", ""),
        erin.request_id: ("REJECTED", RejectReason.SOLD_OUT.value),
    }
    assert await _issued_quantity(pool, coupon_id) == 3


async def test_a_batch_that_would_over_issue_writes_nothing(pool: asyncpg.Pool) -> None:
    coupon_id = await _coupon(pool, 1)
    press = _press(coupon_id, "alice")
    with pytest.raises(asyncpg.CheckViolationError):
        async with postgres.transaction(pool) as conn:
            await postgres.record_batch(
                conn,
                [Decision(press, IssueStatus.ISSUED)],
                datetime.now(UTC),
                {coupon_id: 2},  # more than the stock: the coupons' CHECK refuses it
            )
    assert await _rows(pool, coupon_id) == {}
    assert await _issued_quantity(pool, coupon_id) == 0
    await issue_batch(pool, [press])  # the connection it failed on serves the next batch
    assert await _issued_quantity(pool, coupon_id) == 1


async def test_a_transaction_left_open_is_rolled_back_without_a_session_reset(
    pool: asyncpg.Pool,
) -> None:
    coupon_id = await _coupon(pool, 5)
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("UPDATE coupons SET issued_quantity = 4 WHERE id = $1", coupon_id)
    async with pool.acquire() as conn:  # the pool's only connection, given back mid-transaction
        assert not conn.is_in_transaction()
    assert await _issued_quantity(pool, coupon_id) == 0


@pytest.mark.parametrize("script_cache", ["kept", "flushed"])
async def test_the_batchs_redis_updates_are_written_then_announced(
    settings: Settings, script_cache: str
) -> None:
    client = redis_client.connect(settings)
    listener = redis_client.connect(settings)
    gate = RedisGate(client, settings.redis_prefix)
    coupons = [uuid.uuid4(), uuid.uuid4()]
    now = datetime.now(UTC)
    issued = [(c, f"user-{i}", uuid.uuid4()) for i, c in enumerate(coupons)]
    outcomes = [(c, u, RecordedOutcome(r, IssueStatus.ISSUED, None, now)) for c, u, r in issued]
    pubsub = listener.pubsub()
    await pubsub.subscribe(*(gate.outcomes_channel(c) for c in coupons))
    try:
        if script_cache == "flushed":  # as after a Redis restart: the script is loaded again
            await client.script_flush()
        await gate.record_batch({coupons[0]: 1, coupons[1]: 1}, issued, outcomes)

        heard: dict[str, str] = {}

        async def every_coupon_announced() -> bool:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                channel, data = message["channel"], message["data"]
                heard[channel.decode()] = data.decode()
            return len(heard) == len(coupons)

        await wait_until(every_coupon_announced, 10, "one announcement per coupon")
        for coupon_id, user, request_id in issued:
            assert heard[gate.outcomes_channel(coupon_id)] == user
            entry = await client.hget(gate.outcomes_key(coupon_id), user)
            assert isinstance(entry, bytes)
            assert decode_outcome(entry.decode()).request_id == request_id
            assert await client.hget(gate.keys(coupon_id)[1], user) == str(request_id).encode()
            assert await client.get(gate.keys(coupon_id)[2]) == b"1"
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        keys = [k for c in coupons for k in (*gate.keys(c), gate.outcomes_key(c))]
        await client.delete(*keys)
        await asyncio.gather(client.aclose(), listener.aclose())
