"""The issue worker in this test's event loop, on the session's Kafka, PostgreSQL and Redis.

Each test has its own topic, group, schema and coupon (``isolated_settings``); presses are made as
the API makes them (a reservation in the gate, then the message on the topic) and the worker
(``IssueWorker``, the class ``coupon-issuer consumer`` runs) is started on them:
- a batch issues in one transaction and its offset is committed only after the database commit;
- a redelivered message changes nothing;
- a poison message is retried, then dead-lettered (readable on the DLQ topic, its reservation
  given back as FAILED) while the messages of its batch issue;
- an infrastructure fault stalls the partition and is waited out: nothing is dead-lettered.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.adapters import kafka, postgres, postgres_setup, redis_client
from app.adapters.dead_letters import list_dead_letters
from app.adapters.redis_client import RedisClient
from app.adapters.redis_gate import RedisGate, decode_outcome
from app.config import Settings
from app.consumer.worker import IssueWorker
from app.domain.codec import IssueRequest, encode
from app.domain.dead_letter import Entry
from app.domain.request_ids import new_request_id
from app.domain.status import RecordedOutcome
from app.local.stack import prepare
from app.observability import metrics
from harness import wait_until
from harness.coupons import sale_coupon
from tests.stack import isolated_settings, refuse_poison_users

MAX_ATTEMPTS = 3


class _FlakyPool:
    """The real pool, but ``acquire`` refuses (connection refused) while ``down`` is set."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.down = False
        self.refused = 0

    def acquire(self) -> Any:
        if self.down:
            self.refused += 1
            raise ConnectionRefusedError("database away (test)")
        return self._pool.acquire()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


@dataclass
class Rig:
    settings: Settings
    pool: asyncpg.Pool
    flaky: _FlakyPool
    redis: RedisClient
    gate: RedisGate
    producer: AIOKafkaProducer
    consumer: AIOKafkaConsumer
    worker: IssueWorker
    # (committed offset, requests decided in PostgreSQL when the commit was asked for)
    commits: list[tuple[int, int]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def coupon(self, total: int, users: list[str]) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
        """A coupon in PostgreSQL whose gate holds a reservation for each of ``users``."""
        coupon = sale_coupon(total, "worker test")
        async with self.pool.acquire() as conn:
            await postgres.insert_coupon(conn, coupon)
        held = {user: new_request_id() for user in users}
        await self.gate.load(coupon.id, total, coupon.expires_at, list(held.items()))
        return coupon.id, held

    async def publish(self, coupon_id: uuid.UUID, held: dict[str, uuid.UUID]) -> None:
        """One message per reservation, as the API publishes it after reserving."""
        for user, request_id in held.items():
            request = IssueRequest(coupon_id, user, request_id, datetime.now(UTC))
            await (
                await self.producer.send(self.settings.topic, encode(request), key=request.key())
            )

    async def start(self) -> None:
        self.task = asyncio.create_task(self.worker.run())
        await wait_until(self.worker.joined.is_set, 60, "the worker to join its group")

    async def decided(self, coupon_id: uuid.UUID) -> dict[str, str]:
        rows = await self.pool.fetch(
            "SELECT user_id, status FROM issue_requests WHERE coupon_id = $1", coupon_id
        )
        return {r["user_id"]: r["status"] for r in rows}

    async def outcome(self, coupon_id: uuid.UUID, user: str) -> RecordedOutcome | None:
        entry = await self.redis.hget(self.gate.outcomes_key(coupon_id), user)
        if entry is None:
            return None
        return decode_outcome(entry if isinstance(entry, str) else entry.decode())

    async def letters(self, coupon_id: uuid.UUID) -> list[Entry]:
        entries = await list_dead_letters(self.settings.kafka_bootstrap, self.settings.dlq_topic)
        return [e for e in entries if e.letter.original_key == str(coupon_id).encode()]

    def committed_to(self, offset: int) -> bool:
        return any(o >= offset for o, _ in self.commits)


@pytest.fixture
async def rig(kafka_bootstrap: str) -> AsyncIterator[Rig]:
    settings = isolated_settings(kafka_bootstrap, batch_max=50, max_attempts=MAX_ATTEMPTS)
    await asyncio.to_thread(prepare, settings)
    pool = await postgres_setup.create_pool(settings.database_url, settings.db_schema, 4)
    flaky = _FlakyPool(pool)
    client = redis_client.connect(settings)
    gate = RedisGate(client, settings.redis_prefix)
    producer = kafka.make_producer(settings.kafka_bootstrap, linger_ms=0, timeout_ms=10_000)
    consumer = kafka.make_consumer(
        settings.kafka_bootstrap, settings.consumer_group, settings.batch_max
    )
    worker = IssueWorker(
        consumer,
        producer,
        cast(asyncpg.Pool, flaky),
        gate,
        topic=settings.topic,
        dlq_topic=settings.dlq_topic,
        batch_max=settings.batch_max,
        max_attempts=settings.max_attempts,
        retry_backoff_s=settings.retry_backoff_ms / 1000,
    )
    rig = Rig(settings, pool, flaky, client, gate, producer, consumer, worker)
    commit = consumer.commit

    async def recording_commit(offsets: dict[TopicPartition, int]) -> None:
        # What PostgreSQL holds at the moment the worker asks for the commit.
        decided = await pool.fetchval("SELECT count(*) FROM issue_requests")
        rig.commits.extend((offset, decided) for offset in offsets.values())
        await commit(offsets)

    consumer.commit = recording_commit
    await producer.start()
    await consumer.start()
    try:
        yield rig
    finally:
        worker.stop()
        if rig.task is not None:
            await asyncio.wait_for(rig.task, 60)
        await consumer.stop()
        await producer.stop()
        await client.aclose()
        await pool.close()


async def test_a_batch_is_issued_in_one_transaction_and_committed_after_it(rig: Rig) -> None:
    users = [f"u{i}" for i in range(5)]
    coupon_id, held = await rig.coupon(3, users)
    await rig.publish(coupon_id, held)
    await rig.start()

    await wait_until(lambda: rig.committed_to(len(users)), 60, "the batch's offsets committed")
    decided = await rig.decided(coupon_id)
    assert sorted(decided.values()) == ["ISSUED"] * 3 + ["REJECTED"] * 2
    # Every commit was asked for once the messages before its offset were decided in PostgreSQL.
    assert rig.commits and all(decided_then >= offset for offset, decided_then in rig.commits)
    for user in users:
        outcome = await rig.outcome(coupon_id, user)
        assert outcome is not None and outcome.status.value == decided[user]
    async with rig.pool.acquire() as conn:
        coupon = await postgres.get_coupon(conn, coupon_id)
    assert coupon is not None and coupon.issued_quantity == 3


async def test_a_redelivered_message_changes_nothing(rig: Rig) -> None:
    coupon_id, held = await rig.coupon(5, ["alice"])
    await rig.publish(coupon_id, held)
    await rig.start()
    await wait_until(lambda: rig.committed_to(1), 60, "the first delivery committed")
    first = await rig.outcome(coupon_id, "alice")
    duplicates = metrics.CONSUMER_MESSAGES.labels("duplicate_delivery")._value.get()

    await rig.publish(coupon_id, held)  # the same request again, as a redelivery brings it
    await wait_until(lambda: rig.committed_to(2), 60, "the redelivery committed")

    assert await rig.decided(coupon_id) == {"alice": "ISSUED"}
    async with rig.pool.acquire() as conn:
        coupon = await postgres.get_coupon(conn, coupon_id)
    assert coupon is not None and coupon.issued_quantity == 1
    assert await rig.outcome(coupon_id, "alice") == first
    assert metrics.CONSUMER_MESSAGES.labels("duplicate_delivery")._value.get() == duplicates + 1
    assert await rig.letters(coupon_id) == []


async def test_a_poison_message_is_retried_then_dead_lettered_while_its_batch_issues(
    rig: Rig,
) -> None:
    schema = rig.settings.db_schema
    await refuse_poison_users(rig.pool, schema)
    users = ["fine-0", "fine-1", "poison-1", "fine-2", "fine-3"]
    coupon_id, held = await rig.coupon(10, users)
    await rig.publish(coupon_id, held)  # all on the topic before the worker starts: one batch
    data_retries = metrics.CONSUMER_RETRIES.labels("data")._value.get()
    await rig.start()

    await wait_until(lambda: rig.committed_to(len(users)), 60, "the batch committed")
    assert await rig.decided(coupon_id) == {u: "ISSUED" for u in users if u != "poison-1"}
    letters = await rig.letters(coupon_id)
    assert len(letters) == 1
    letter = letters[0].letter
    assert letter.attempts == MAX_ATTEMPTS and "refused by test trigger" in letter.error
    assert (letter.topic, letter.offset) == (rig.settings.topic, users.index("poison-1"))
    assert metrics.CONSUMER_RETRIES.labels("data")._value.get() == data_retries + MAX_ATTEMPTS - 1
    # Its user is told FAILED (PostgreSQL and Redis) and the reservation is given back.
    reason = await rig.pool.fetchval(
        "SELECT reason FROM failed_requests WHERE request_id = $1", held["poison-1"]
    )
    assert reason == "DEAD_LETTERED"
    outcome = await rig.outcome(coupon_id, "poison-1")
    assert outcome is not None
    assert (outcome.status.value, outcome.reason) == ("FAILED", "DEAD_LETTERED")
    assert await rig.gate.holding_request(coupon_id, "poison-1") is None


async def test_an_infrastructure_fault_stalls_and_is_waited_out_never_dead_lettered(
    rig: Rig,
) -> None:
    users = [f"u{i}" for i in range(4)]
    coupon_id, held = await rig.coupon(10, users)
    await rig.publish(coupon_id, held)
    transient = metrics.CONSUMER_RETRIES.labels("transient")._value.get()
    rig.flaky.down = True
    await rig.start()

    await wait_until(
        lambda: rig.worker.stalled and rig.flaky.refused >= 3, 60, "the partition stalled"
    )
    assert metrics.CONSUMER_STALLED_PARTITIONS._value.get() == 1
    assert rig.commits == [] and await rig.decided(coupon_id) == {}
    rig.flaky.down = False

    await wait_until(lambda: rig.committed_to(len(users)), 60, "the batch committed")
    assert await rig.decided(coupon_id) == dict.fromkeys(users, "ISSUED")
    await wait_until(lambda: not rig.worker.stalled, 10, "the stall to end")
    assert metrics.CONSUMER_STALLED_PARTITIONS._value.get() == 0
    assert metrics.CONSUMER_RETRIES.labels("transient")._value.get() >= transient + 3
    assert await rig.letters(coupon_id) == []
    assert await rig.pool.fetchval("SELECT count(*) FROM failed_requests") == 0
