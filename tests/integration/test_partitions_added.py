"""Partitions added to the request topic mid-sale (kafka-topics --alter 3 -> 6).

Once the topic has more partitions, a coupon id's hash picks another partition than it did, while
the coupon's earlier presses still wait in the old one: two consumers would then issue one
coupon's presses out of order, and where the gate admitted more presses than the stock (its
Redis state lost and rebuilt from PostgreSQL) a later press could take the stock of an earlier one. Each
coupon's partition is fixed when the coupon is created and every press is published to it, so
first come, first served holds; and the lag the autoscaler reads follows the new partition count.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.adapters import redis_client
from app.adapters.kafka import partition_for
from app.adapters.kafka_lag import read_lag
from app.adapters.redis_gate import RedisGate
from app.autoscaling.observation import Reading, observe
from app.autoscaling.policy import ScalingSpec, decide
from app.local.kafka_jars import run_tool
from tests.stack import Stack, isolated_settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

BEFORE, AFTER = 3, 6
STOCK = 10


async def _coupon_that_would_move(stack: Stack) -> str:
    """A coupon whose id hashes to another partition over 6 partitions than over 3."""
    for _ in range(40):
        coupon = await stack.create_coupon(STOCK)
        key = coupon.encode()
        if partition_for(key, BEFORE) != partition_for(key, AFTER):
            return coupon
    raise AssertionError("no coupon id of 40 hashes differently over 3 and 6 partitions")


async def _partitions_of_presses(bootstrap: str, topic: str, key: bytes) -> Counter[int]:
    """How many of the coupon's presses each of the six partitions holds (read once)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(AFTER)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        found: Counter[int] = Counter()
        while [tp for tp in tps if await reader.position(tp) < ends[tp]]:
            batch = await reader.getmany(*tps, timeout_ms=500)
            for tp, records in batch.items():
                found.update(tp.partition for r in records if r.key == key)
        return found
    finally:
        await reader.stop()


async def _lose_gate(stack: Stack, coupon: str) -> None:
    """Redis forgets the coupon's gate (a failover to an empty replica, say)."""
    client = redis_client.connect(stack.settings)
    try:
        await client.delete(*RedisGate(client, stack.settings.redis_prefix).keys(uuid.UUID(coupon)))
    finally:
        await client.aclose()


async def _press(stack: Stack, coupon: str, users: list[str]) -> None:
    for user in users:  # one after another: the press order is the order of these calls
        r = await stack.request_issue(coupon, user)
        assert r.status_code == 202 and r.json()["status"] == "QUEUED", r.text


async def test_a_coupon_keeps_its_partition_and_its_order_when_partitions_are_added(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_bootstrap, partitions=BEFORE)
    stack = await Stack(settings, tmp_path).start(consumers=0)  # presses wait in the topic
    try:
        coupon = await _coupon_that_would_move(stack)
        pinned = await stack.pool.fetchval(
            "SELECT partition FROM coupons WHERE id = $1", uuid.UUID(coupon)
        )
        assert pinned == partition_for(coupon.encode(), BEFORE)
        users = [f"user-{i:02d}" for i in range(2 * STOCK)]
        await _press(stack, coupon, users[:5])

        await asyncio.to_thread(
            run_tool,
            "kafka-topics",
            "--bootstrap-server",
            kafka_bootstrap,
            "--alter",
            "--topic",
            settings.topic,
            "--partitions",
            str(AFTER),
        )
        # A new API process (a rolling deploy, another replica) knows the six partitions at once.
        await asyncio.to_thread(stack.api.stop)  # type: ignore[union-attr]
        stack.start_api()
        await stack.wait_api_ready()
        await _press(stack, coupon, users[5:STOCK])
        await _lose_gate(stack, coupon)  # rebuilt from PostgreSQL: nothing issued yet, all free
        await _press(stack, coupon, users[STOCK:])  # twice the stock is now queued

        where = await _partitions_of_presses(kafka_bootstrap, settings.topic, coupon.encode())
        print(f"\n[partitions added] presses of the coupon per partition: {dict(where)}")
        assert where == Counter({pinned: len(users)})

        for _ in range(2):
            stack.add_consumer()
        await stack.wait_processed(coupon, len(users))
        issued = await stack.pool.fetch(
            "SELECT user_id FROM issue_requests WHERE coupon_id = $1 AND status = 'ISSUED'",
            uuid.UUID(coupon),
        )
        assert sorted(r["user_id"] for r in issued) == users[:STOCK]  # first come, first served

        snapshot = await read_lag(kafka_bootstrap, settings.topic, settings.consumer_group)
        assert snapshot.partition_count == AFTER
        observation, _ = observe(Reading(0.0, snapshot, replicas=2), None)
        assert decide(observation, ScalingSpec()).ceiling == AFTER  # the autoscaler's ceiling
    finally:
        await stack.stop()
