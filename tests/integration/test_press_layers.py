"""bench.press_layers: every press of each variant went through the layers it names."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.adapters import redis_client
from app.config import Settings
from bench.press_layers import VARIANTS, measure
from harness import isolated
from tests.servers import redis_url


async def test_the_real_layers_reserve_in_redis_and_publish_to_kafka(kafka_bootstrap: str) -> None:
    settings = isolated(
        Settings(redis_url=redis_url(), kafka_bootstrap=kafka_bootstrap), "t_press_layers"
    )
    presses, in_flight, rounds = 200, 8, 2
    costs = await measure(settings, presses, in_flight, rounds)

    assert set(costs.us_per_press) == set(VARIANTS)
    assert all(len(v) == rounds and all(us > 0 for us in v) for v in costs.us_per_press.values())
    # the real gate and the real publisher each served two variants, plus the warm-up presses
    served = 2 * rounds * presses + in_flight
    client = redis_client.connect(settings)
    try:
        held = 0
        async for key in client.scan_iter(match=f"{settings.redis_prefix}:*:holders"):
            held += await client.hlen(key)
    finally:
        await client.aclose()
    assert held == served
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(settings.topic, p) for p in range(3)]
        ends = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    assert sum(ends.values()) == served
    assert set(costs.layers()) >= {"all of it"}
