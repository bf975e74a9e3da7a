"""The dead-letter topic: park a message that failed alone, list what failed, replay it.

Every read and write of the topic is here (the consumer, the API, ``verify`` and the CLI call it);
the envelope's format is app/domain/dead_letter.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.adapters.kafka import make_producer, running
from app.domain.dead_letter import DeadLetter, Entry, decode_dead_letter, encode_dead_letter

REPLAY_GROUP_SUFFIX = ".replay"


async def publish_dead_letter(
    producer: AIOKafkaProducer, dlq_topic: str, letter: DeadLetter
) -> None:
    """Park ``letter`` on the dead-letter topic, keyed as its original; returns once acknowledged."""
    sent = await producer.send(dlq_topic, encode_dead_letter(letter), key=letter.original_key)
    await sent


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    # A fresh metadata snapshot of every topic: the consumer's own cluster view only learns the
    # topics it subscribes to (``consumer.topics()`` fetches them but keeps nothing).
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]


async def _read(consumer: AIOKafkaConsumer, deadline_s: float = 30) -> AsyncIterator[Entry]:
    """Yield every record from the consumer's positions up to the end seen when reading began.

    The end comes from the fetch's high watermark, not ListOffsets (wrong on some brokers).
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    end: dict[TopicPartition, int] = {}
    remaining = set(consumer.assignment())
    while remaining and loop.time() < give_up:
        batches = await consumer.getmany(*remaining, timeout_ms=500)
        for tp in list(remaining):
            if tp not in end and consumer.highwater(tp) is not None:
                end[tp] = consumer.highwater(tp)
            for record in batches.get(tp, []):
                if record.offset < end.get(tp, record.offset + 1) and record.value is not None:
                    yield Entry(tp.partition, record.offset, decode_dead_letter(record.value))
            if tp in end and await consumer.position(tp) >= end[tp]:
                remaining.discard(tp)
    if remaining:
        raise TimeoutError(f"could not read to the end of {sorted(remaining)} in {deadline_s}s")


async def list_dead_letters(bootstrap: str, dlq_topic: str) -> list[Entry]:
    """Every dead letter currently on the topic (reads from the start, commits nothing)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    async with running(consumer):
        tps = await _partitions(consumer, dlq_topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return [entry async for entry in _read(consumer)]


async def replay_dead_letters(bootstrap: str, dlq_topic: str, group: str) -> int:
    """Send dead letters not replayed before back to their source topic; returns how many.

    Progress is a committed offset of the replay group, so a replay is never repeated.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group + REPLAY_GROUP_SUFFIX,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = make_producer(bootstrap, linger_ms=5, timeout_ms=10_000)
    async with running(consumer, producer):
        tps = await _partitions(consumer, dlq_topic)
        consumer.assign(tps)
        for tp in tps:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        replayed = 0
        async for entry in _read(consumer):
            letter = entry.letter
            sent = await producer.send(letter.topic, letter.original_value, key=letter.original_key)
            await sent
            await consumer.commit({TopicPartition(dlq_topic, entry.partition): entry.offset + 1})
            replayed += 1
        return replayed
