"""Kafka topics with lag on demand: the lag reader's tests and the operator's (kmock and the real
API server)."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def new_topic(bootstrap: str, partitions: int, name: str = "") -> str:
    topic = name or f"op-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


async def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        batch = [await producer.send(topic, b"m") for _ in range(count)]
        await asyncio.gather(*batch)
    finally:
        await producer.stop()


async def commit_everything(bootstrap: str, topic: str, group: str, partitions: int) -> None:
    """What a consumer group that caught up would have committed (no join needed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while len(await consumer.getmany(timeout_ms=200)) > 0:
            pass  # read to the end: positions are then the high watermarks
        await consumer.commit({tp: await consumer.position(tp) for tp in tps})
    finally:
        await consumer.stop()
