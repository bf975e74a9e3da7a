"""The lag reader against a real Apache Kafka (the session's ``kafka_bootstrap``)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.adapters.kafka_lag import (
    LagReader,
    LagReadError,
    ReconnectingLagReader,
    TopicNotFound,
    read_lag,
)
from app.local.kafka import KafkaNode
from harness import wait_until
from tests.lag import new_topic


async def produce(bootstrap: str, topic: str, per_partition: dict[int, int]) -> None:
    """Batched sends: several records per produce request, each one counted in the log end."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=20
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, b"m", partition=p)
            for p, n in per_partition.items()
            for _ in range(n)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def commit(bootstrap: str, topic: str, group: str, offsets: dict[int, int]) -> None:
    """Commit as the group would, without joining it (manual assignment)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = {TopicPartition(topic, p): o for p, o in offsets.items()}
        consumer.assign(list(tps))
        await consumer.commit(tps)
    finally:
        await consumer.stop()


async def lagging(bootstrap: str, per_partition: dict[int, int]) -> tuple[str, str]:
    """A new topic holding ``per_partition`` messages, and a group that never consumed it."""
    topic = await new_topic(bootstrap, len(per_partition))
    await produce(bootstrap, topic, per_partition)
    return topic, f"g-{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(loop_scope="session")
async def reader(kafka_bootstrap: str) -> AsyncIterator[LagReader]:
    async with LagReader(kafka_bootstrap, timeout_s=5) as lag_reader:
        yield lag_reader


async def test_lag_counts_every_message_when_no_consumer_ever_ran(
    kafka_bootstrap: str, reader: LagReader
) -> None:
    topic, group = await lagging(kafka_bootstrap, {0: 40, 1: 25, 2: 7})

    snap = await reader.read(topic, group)

    assert snap.partition_count == 3
    assert snap.lag_per_partition == (40, 25, 7)
    assert snap.total_lag == 72
    assert [p.log_end for p in snap.partitions] == [40, 25, 7]
    assert all(p.committed is None and p.log_start == 0 for p in snap.partitions)
    assert snap.members in (0, None)  # nobody joined, and reading did not join either


async def test_commits_lower_the_lag_by_exactly_what_was_committed(
    kafka_bootstrap: str, reader: LagReader
) -> None:
    topic, group = await lagging(kafka_bootstrap, {0: 30, 1: 30, 2: 30})
    before = await reader.read(topic, group)

    await commit(kafka_bootstrap, topic, group, {0: 10, 2: 30})
    after = await reader.read(topic, group)

    assert before.total_lag - after.total_lag == 40
    assert after.lag_per_partition == (20, 30, 0)
    assert [p.committed for p in after.partitions] == [10, None, 30]
    assert after.consumed_total - before.consumed_total == 40
    # New messages raise the log end, seen by the same reader on its next read.
    await produce(kafka_bootstrap, topic, {1: 5})
    later = await reader.read(topic, group)
    assert later.lag_per_partition == (20, 35, 0)
    assert later.produced_total - after.produced_total == 5


async def test_reader_serves_concurrent_reads_of_different_topics(
    kafka_bootstrap: str, reader: LagReader
) -> None:
    a, b = await new_topic(kafka_bootstrap, 2), await new_topic(kafka_bootstrap, 4)
    await produce(kafka_bootstrap, a, {0: 3, 1: 4})
    await produce(kafka_bootstrap, b, {3: 9})
    snap_a, snap_b = await asyncio.gather(reader.read(a, "ga"), reader.read(b, "gb"))
    assert (snap_a.partition_count, snap_a.total_lag) == (2, 7)
    assert (snap_b.partition_count, snap_b.lag_per_partition) == (4, (0, 0, 0, 9))


async def test_read_lag_convenience_and_missing_topic(kafka_bootstrap: str) -> None:
    topic = await new_topic(kafka_bootstrap, 1)
    await produce(kafka_bootstrap, topic, {0: 2})
    assert (await read_lag(kafka_bootstrap, topic, "g")).total_lag == 2
    with pytest.raises(TopicNotFound):
        await read_lag(kafka_bootstrap, f"missing-{uuid.uuid4().hex[:8]}", "g")


async def test_unreachable_broker_is_a_lag_read_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LagReadError):
        await read_lag(f"127.0.0.1:{port}", "t", "g", timeout_s=2)


async def test_members_of_a_running_group_are_counted(
    kafka_bootstrap: str, reader: LagReader
) -> None:
    topic, group = await new_topic(kafka_bootstrap, 2), f"g-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:

        async def assigned() -> bool:
            await consumer.getmany(timeout_ms=200)  # joining takes a few seconds
            return bool(consumer.assignment())

        await wait_until(assigned, 20, "the consumer's assignment", interval=0)
        snap = await reader.read(topic, group)
        assert snap.members == 1  # DescribeGroups answered; None would mean we lost that
    finally:
        await consumer.stop()


async def test_reconnecting_reader_reads_again_once_a_restarted_broker_is_back(
    tmp_path: Path,
) -> None:
    broker = KafkaNode(tmp_path / "kafka").start()
    lag = ReconnectingLagReader(broker.bootstrap, timeout_s=2)
    try:
        topic = await new_topic(broker.bootstrap, 2)
        await produce(broker.bootstrap, topic, {0: 3, 1: 1})
        assert (await lag.read(topic, "g")).lag_per_partition == (3, 1)

        broker.stop()
        for _ in range(2):  # down: every read fails (a connect, then a reconnect), none hangs
            with pytest.raises(LagReadError):
                await lag.read(topic, "g")

        broker.start()  # the same port and log dirs: the topic and its records are still there
        await produce(broker.bootstrap, topic, {1: 4})
        # The first read after the restart already sees the broker again: no stale connection.
        assert (await lag.read(topic, "g")).lag_per_partition == (3, 5)
    finally:
        await lag.close()
        broker.stop()
