"""Kafka: topic administration, the request publisher, consumers and the dead-letter topic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner

from app.domain.codec import IssueRequest, encode


class BrokerUnavailable(Exception):
    """The message never left this process (no broker to send it to): nothing was queued."""


class PublishUnconfirmed(Exception):
    """The message was handed to the broker but no ack came in time: it may still be queued."""


class TopicProblem(Exception):
    """A topic exists but does not match what the service needs."""


@dataclass(frozen=True, slots=True)
class TopicReport:
    name: str
    partitions: int
    created: bool


async def ensure_topics(
    bootstrap: str, wanted: Mapping[str, int], replication_factor: int, timeout_s: float = 30
) -> list[TopicReport]:
    """Create missing topics; verify existing ones have at least the wanted partitions."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, replication_factor)
            for name, partitions in wanted.items()
            if name not in existing
        ]
        created = set()
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process won the race; verified below
            created = {t.name for t in missing}
        reports = []
        for meta in await admin.describe_topics(list(wanted)):
            name, have = meta["topic"], len(meta["partitions"])
            if meta["error_code"] or have == 0:
                raise TopicProblem(f"topic {name!r}: broker error code {meta['error_code']}")
            if have < wanted[name]:
                raise TopicProblem(
                    f"topic {name!r} has {have} partitions, configuration asks for {wanted[name]}:"
                    " add partitions with kafka-topics --alter, or set COUPON_PARTITIONS"
                )
            reports.append(TopicReport(name, have, name in created))
        return reports
    finally:
        await admin.close()


@asynccontextmanager
async def running(*clients: AIOKafkaConsumer | AIOKafkaProducer) -> AsyncIterator[None]:
    """Start the clients in order and always stop them, a failed start included (aiokafka leaves
    a client that failed to bootstrap open, and complains about it at exit)."""
    try:
        for client in clients:
            await client.start()
        yield
    finally:
        for client in reversed(clients):
            await client.stop()


def make_producer(
    bootstrap: str, linger_ms: int, timeout_ms: int, max_batch_bytes: int = 16384
) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas (idempotence off: tansu lacks it).

    ``max_batch_bytes`` bounds one partition's batch: aiokafka sends one batch per partition at
    a time, and a send that finds the batch full waits for it to drain, so a sale's single hot
    partition needs room for every press in flight."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=linger_ms,
        request_timeout_ms=timeout_ms,
        max_batch_size=max_batch_bytes,
    )


class Publisher:
    """Publishes issue requests and awaits the broker's ack for each one."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s

    async def publish(self, request: IssueRequest) -> int:
        """Send and wait for the ack; returns the partition.

        Raises BrokerUnavailable when the message never left (safe to undo the reservation), and
        PublishUnconfirmed when it was sent but not acknowledged in time: a stalled broker can
        still append it later, so nobody may claim it was rolled back.
        """
        sent = None
        try:
            async with asyncio.timeout(self._timeout_s):  # one timer for both steps
                sent = await self._producer.send(self._topic, encode(request), key=request.key())
                meta = await sent
        except (KafkaError, TimeoutError) as exc:
            if sent is None:
                raise BrokerUnavailable(f"broker unreachable: {exc!r}") from exc
            raise PublishUnconfirmed(f"no ack from the broker: {exc!r}") from exc
        return int(meta.partition)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the producer's default partitioner picks for ``key`` (a coupon id)."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(key, every, every))


def make_consumer(bootstrap: str, group: str, max_records: int) -> AIOKafkaConsumer:
    """A group member with manual commits; starts from the earliest offset the first time."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_records,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        # Batches are committed to PostgreSQL in well under this; a stuck DB shows as lag.
        max_poll_interval_ms=300_000,
    )
