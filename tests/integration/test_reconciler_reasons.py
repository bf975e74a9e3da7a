"""What the reconciler tells a stranded press, against the real broker: a loss of acknowledged
messages it can see cheaply gets its own reason, for presses made before it saw the loss; any
other stranded press is told no more than NOT_QUEUED (no outcome, nothing left queued for it).

- TOPIC_RECREATED: the request topic deleted and created again (a new topic id) between passes.
- LOG_TRUNCATED: the partition's log end went backwards: the broker killed and its log's tail
  gone on restart, as after a power loss takes what was acknowledged but not yet flushed (Kafka
  does not fsync per message). The tail is cut off the segment at a batch boundary, which is what
  such a loss leaves on disk.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from app.adapters import postgres, postgres_setup, redis_client
from app.adapters.kafka import ensure_topics, wanted_topics
from app.adapters.kafka_lag import LagReader
from app.adapters.redis_gate import RedisGate, decode_outcome
from app.config import Settings
from app.domain.settlement import CLOCK_MARGIN
from app.local.kafka import KafkaNode
from app.local.stack import prepare
from app.reconciler.reconcile import Reconciler, open_reconciler
from harness import wait_until
from harness.stranded import Seeded, seed_stranded
from tests.stack import isolated_settings

QUEUED = 10  # records on the partition, all consumed, before the loss
KEPT = 4  # what the broker still has of them after it


def _settings(bootstrap: str) -> Settings:
    return isolated_settings(
        bootstrap,
        partitions=1,
        publish_timeout_ms=1000,
        delivery_timeout_ms=1000,
        reconcile_min_age_s=1.5,
    )


async def _told(settings: Settings, seeded: list[Seeded]) -> set[tuple[str, str]]:
    """(status, reason) of these presses, as PostgreSQL recorded them and as status reads (Redis)
    answer; asserts the two agree."""
    ids = [s.request_id for s in seeded]
    pool = await postgres_setup.create_pool(settings.database_url, settings.db_schema, 1)
    try:
        rows = await pool.fetch(
            "SELECT request_id, reason FROM failed_requests WHERE request_id = ANY($1::uuid[])",
            ids,
        )
    finally:
        await pool.close()
    recorded = {r["request_id"]: ("FAILED", r["reason"]) for r in rows}
    client = redis_client.connect(settings)
    try:
        gate = RedisGate(client, settings.redis_prefix)
        answered = {}
        for s in seeded:
            entry = await client.hget(gate.outcomes_key(s.coupon_id), s.user_id)
            assert isinstance(entry, bytes), s  # not None, and undecoded: the client's default
            outcome = decode_outcome(entry.decode())
            assert outcome.request_id == s.request_id
            answered[s.request_id] = (outcome.status.value, outcome.reason)
            assert not await gate.has_reserved(s.coupon_id, s.user_id)  # given back
    finally:
        await client.aclose()
    assert answered == recorded
    return set(recorded.values())


async def _settle(reconciler: Reconciler, seeded: list[Seeded]) -> None:
    """Passes until every one of these presses is settled (they are young: wait their age)."""
    wanted = {s.request_id for s in seeded}
    settled: set[uuid.UUID] = set()

    async def all_settled() -> bool:
        report = await reconciler.run_pass()
        settled.update(r.request_id for r in report.released)
        return wanted <= settled

    await wait_until(all_settled, 60, "the reconciler to settle the presses", interval=0.3)


async def _after_the_loss_is_told_not_queued(settings: Settings, reconciler: Reconciler) -> None:
    """A press made after the loss was seen cannot have been lost in it."""
    await _past_the_loss(settings)
    later = await seed_stranded(settings, 1, 2, age=timedelta(0))
    await _settle(reconciler, later)
    assert await _told(settings, later) == {("FAILED", "NOT_QUEUED")}


async def _past_the_loss(settings: Settings) -> None:
    """Wait until the clock is past the loss the reconciler saw by more than its clock margin: a
    press made nearer to it is still counted as made before it (and told of it). A request id
    keeps its time in whole milliseconds, cut down: one made within a millisecond of the bound
    reads as before it, so the wait is one millisecond longer."""
    pool = await postgres_setup.create_pool(settings.database_url, settings.db_schema, 1)
    try:
        async with pool.acquire() as conn:
            watches = await postgres.partition_watches(conn, settings.topic)
    finally:
        await pool.close()
    lost = [w.lost_at for w in watches.values() if w.lost_at is not None]
    assert lost, watches
    after = max(lost) + CLOCK_MARGIN + timedelta(milliseconds=1)

    def past() -> bool:
        return datetime.now(UTC) > after

    await wait_until(past, 10, "the clock to pass the loss by the clock margin", interval=0.05)


async def test_a_recreated_topic_is_told_topic_recreated(kafka_bootstrap: str) -> None:
    settings = _settings(kafka_bootstrap)
    await asyncio.to_thread(prepare, settings)
    before = await seed_stranded(settings, 1, 3)
    async with open_reconciler(settings) as reconciler:
        first = await reconciler.run_pass()
        assert first.suspects == 3 and first.released == []
        async with LagReader(settings.kafka_bootstrap) as reader:
            old_id = await reader.topic_id(settings.topic)
        await _recreate_topic(settings)
        async with LagReader(settings.kafka_bootstrap) as reader:
            assert await reader.topic_id(settings.topic) not in (None, old_id)
        second = await reconciler.run_pass()
        assert {r.request_id for r in second.released} == {s.request_id for s in before}
        assert await _told(settings, before) == {("FAILED", "TOPIC_RECREATED")}
        await _after_the_loss_is_told_not_queued(settings, reconciler)


async def _recreate_topic(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([settings.topic])

        async def gone() -> bool:
            return settings.topic not in await admin.list_topics()

        await wait_until(gone, 30, "the topic to be deleted")
    finally:
        await admin.close()
    request_topic = [t for t in wanted_topics(settings) if t.name == settings.topic]

    async def created() -> bool:
        try:
            await ensure_topics(settings.kafka_bootstrap, request_topic)
        except Exception:  # the deletion may still be under way on the broker
            return False
        return True

    await wait_until(created, 30, "the topic to be created again", interval=0.3)


@pytest_asyncio.fixture(loop_scope="session")
async def own_broker(tmp_path: Path) -> AsyncIterator[KafkaNode]:
    broker = KafkaNode(tmp_path / "kafka").start()  # in this thread: it dies with its starter
    try:
        yield broker
    finally:
        broker.stop()


async def test_a_log_end_gone_backwards_is_told_log_truncated(own_broker: KafkaNode) -> None:
    settings = _settings(own_broker.bootstrap)
    await asyncio.to_thread(prepare, settings)
    await _queue_and_consume(settings, QUEUED)
    before = await seed_stranded(settings, 1, 3)
    async with open_reconciler(settings) as reconciler:
        first = await reconciler.run_pass()  # log end QUEUED, no lag: suspects
        assert first.suspects == 3 and first.released == []
        own_broker.kill()
        _cut_log_tail(own_broker, settings.topic, keep=KEPT)
        await asyncio.to_thread(own_broker.start)
        async with LagReader(settings.kafka_bootstrap) as reader:
            (partition,) = (await reader.read(settings.topic, settings.consumer_group)).partitions
        assert (partition.log_end, partition.lag) == (KEPT, 0), partition
        second = await reconciler.run_pass()
        assert {r.request_id for r in second.released} == {s.request_id for s in before}
        assert await _told(settings, before) == {("FAILED", "LOG_TRUNCATED")}
        await _after_the_loss_is_told_not_queued(settings, reconciler)


async def _queue_and_consume(settings: Settings, n: int) -> None:
    """``n`` records on partition 0, each its own batch, acknowledged by the broker, and the
    group's commit after them (as if the consumer had decided them)."""
    tp = TopicPartition(settings.topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(settings.topic, f"press {i}".encode(), partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(n, "")})
    finally:
        await consumer.stop()


def _cut_log_tail(broker: KafkaNode, topic: str, keep: int) -> None:
    """Cut partition 0's log (one segment, one record per batch) after its first ``keep``
    batches, and drop its indexes (rebuilt on recovery), as a lost unflushed tail leaves it."""
    directory = broker.directory / "data" / f"{topic}-0"
    (segment,) = directory.glob("*.log")
    data = segment.read_bytes()
    position = 0
    for _ in range(keep):
        _, length = struct.unpack_from(">qi", data, position)  # baseOffset, batchLength
        position += 12 + length
    assert position < len(data), "the segment holds no more than what is kept"
    with segment.open("r+b") as f:
        f.truncate(position)
    for index in (*directory.glob("*.index"), *directory.glob("*.timeindex")):
        index.unlink()
