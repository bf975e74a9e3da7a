"""The lag exporter against a real broker and PostgreSQL: lag is exact, and reported at zero consumers."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.adapters import postgres, postgres_setup
from app.adapters.kafka_lag import PartitionLag
from app.config import Settings
from app.local.processes import free_port
from app.local.stack import prepare
from app.observability.lag_state import DrainEstimator
from app.processes.lag_exporter import run_lag_exporter
from harness import scrape, wait_until
from harness.coupons import sale_coupon
from tests.prometheus import check_metrics
from tests.stack import isolated_settings

PRODUCED = {0: 5, 1: 7, 2: 9}  # messages per partition, K = 21
TAKEN = {0: 2, 1: 7}  # what a consumer then consumes and commits (partition 2: nothing)


@dataclass
class Exporter:
    settings: Settings
    port: int
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def text(self) -> str:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"http://127.0.0.1:{self.port}/metrics")
        r.raise_for_status()
        return r.text

    async def samples(self) -> dict[str, float]:
        return scrape(await self.text())

    def key(self, metric: str, partition: int) -> str:
        s = self.settings
        return f'{metric}{{group="{s.consumer_group}",partition="{partition}",topic="{s.topic}"}}'

    async def polls(self) -> float:
        try:
            samples = await self.samples()
        except httpx.TransportError:  # not listening yet
            return 0
        return samples.get('coupon_lag_exporter_polls_total{result="ok",source="kafka"}', 0)

    async def wait_for_fresh_poll(self) -> dict[str, float]:
        """Samples from a poll that started after this call (so they reflect what happened)."""
        seen = await self.polls()

        async def newer() -> bool:
            return await self.polls() >= seen + 2

        await wait_until(newer, 30, "two more lag exporter polls")
        return await self.samples()


@pytest_asyncio.fixture(loop_scope="session")
async def exporter(kafka_bootstrap: str) -> AsyncIterator[Exporter]:
    settings = isolated_settings(kafka_bootstrap, partitions=3)
    await asyncio.to_thread(prepare, settings)  # schema + topics, as a deployment's hook does
    port, stop = free_port(), asyncio.Event()
    task = asyncio.create_task(
        run_lag_exporter(
            settings,
            stop=stop,
            port=port,
            poll_interval_s=0.3,
            coupon_limit=2,
        )
    )
    running = Exporter(settings, port, stop, task)
    await wait_until(running.polls, 30, "the lag exporter's first poll")
    yield running
    stop.set()
    await asyncio.wait_for(task, 30)


async def _produce(settings: Settings, produced: dict[int, int] = PRODUCED) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=50)
    await producer.start()
    try:
        # Batched sends: several records per produce request, counted one by one.
        sent = [
            await producer.send(settings.topic, f"m{p}-{i}".encode(), partition=p)
            for p, n in produced.items()
            for i in range(n)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _arrived(topic: str, partition: int) -> str:
    return f'coupon_topic_arrived_messages_total{{partition="{partition}",topic="{topic}"}}'


async def _consume_and_commit(settings: Settings, taken: dict[int, int]) -> None:
    """Read and commit exactly ``taken`` messages per partition as the group, then leave."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = {p: TopicPartition(settings.topic, p) for p in taken}
        consumer.assign(list(tps.values()))
        read: dict[int, int] = dict.fromkeys(taken, 0)
        while any(read[p] < n for p, n in taken.items()):
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                read[tp.partition] += len(records)
        await consumer.commit({tps[p]: n for p, n in taken.items()})
    finally:
        await consumer.stop()


async def test_lag_is_exact_drops_by_what_was_committed_and_stays_reported_at_zero_consumers(
    exporter: Exporter,
) -> None:
    await _produce(exporter.settings)
    lag_key = "coupon_consumer_lag_messages"

    async def all_produced_counted() -> dict[str, float] | None:
        s = await exporter.samples()
        return s if all(s.get(exporter.key(lag_key, p)) == n for p, n in PRODUCED.items()) else None

    before = await wait_until(all_produced_counted, 30, "lag = produced on every partition")
    assert sum(before[exporter.key(lag_key, p)] for p in PRODUCED) == sum(PRODUCED.values())
    for p, n in PRODUCED.items():
        assert (
            before[
                f'coupon_topic_log_end_offset{{partition="{p}",topic="{exporter.settings.topic}"}}'
            ]
            == n
        )
        assert exporter.key("coupon_consumer_committed_offset", p) not in before  # none yet
        assert before[exporter.key("coupon_consumer_lag_seconds", p)] == math.inf  # no progress
        assert 0 <= before[exporter.key("coupon_consumer_lag_oldest_message_age_seconds", p)] < 120
    assert before[f'coupon_topic_partitions{{topic="{exporter.settings.topic}"}}'] == 3
    assert (
        before[f'coupon_consumer_group_members{{group="{exporter.settings.consumer_group}"}}'] == 0
    )

    await _consume_and_commit(exporter.settings, TAKEN)
    after = await exporter.wait_for_fresh_poll()
    for p, n in PRODUCED.items():
        taken = TAKEN.get(p, 0)
        assert after[exporter.key(lag_key, p)] == n - taken, p
        if taken:
            assert after[exporter.key("coupon_consumer_committed_offset", p)] == taken
    assert sum(after[exporter.key(lag_key, p)] for p in PRODUCED) == sum(PRODUCED.values()) - sum(
        TAKEN.values()
    )
    # Partition 0 progressed and still has lag: a finite drain estimate. Partition 1 is drained.
    assert 0 < after[exporter.key("coupon_consumer_lag_seconds", 0)] < math.inf
    assert after[exporter.key("coupon_consumer_lag_seconds", 1)] == 0
    assert after[exporter.key("coupon_consumer_lag_oldest_message_age_seconds", 1)] == 0

    # The consumer has left: nobody consumes, the lag is still there and still reported.
    later = await exporter.wait_for_fresh_poll()
    assert {p: later[exporter.key(lag_key, p)] for p in PRODUCED} == {
        p: n - TAKEN.get(p, 0) for p, n in PRODUCED.items()
    }
    check_metrics(await exporter.text())


async def test_a_hot_partition_shows_in_its_arrivals_processing_and_the_skew(
    exporter: Exporter,
) -> None:
    settings = exporter.settings
    hot = {0: 30, 1: 5, 2: 5}  # one hot coupon on partition 0, a trickle elsewhere
    await _produce(settings, hot)
    skew = f'coupon_topic_partition_skew_ratio{{topic="{settings.topic}"}}'

    async def all_arrivals_counted() -> dict[str, float] | None:
        s = await exporter.samples()
        counted = {p: s.get(_arrived(settings.topic, p)) for p in hot}
        return s if counted == hot else None

    samples = await wait_until(all_arrivals_counted, 30, "every produced message counted")
    # The first poll saw the empty topic, so the window holds all 40: 30 of them on partition 0.
    assert samples[skew] == pytest.approx(30 / 40)
    assert exporter.key("coupon_consumer_processed_messages_total", 0) not in samples

    await _consume_and_commit(settings, {0: 12})
    after = await exporter.wait_for_fresh_poll()
    assert after[exporter.key("coupon_consumer_processed_messages_total", 0)] == 12
    assert after[skew] == pytest.approx(30 / 40)  # processing does not change where requests go
    check_metrics(await exporter.text())


async def test_sale_gauges_cover_active_coupons_only_up_to_the_cap(exporter: Exporter) -> None:
    settings = exporter.settings
    pool = await postgres_setup.create_pool(settings.database_url, settings.db_schema, 1)
    now = datetime.now(UTC)
    try:
        async with pool.acquire() as conn:
            for i, (total, expires) in enumerate(
                [
                    (10, timedelta(hours=1)),
                    (20, timedelta(hours=2)),
                    (30, timedelta(hours=3)),
                    (40, timedelta(hours=-1)),  # expired: never reported
                ]
            ):
                await postgres.insert_coupon(
                    conn,
                    sale_coupon(
                        total,
                        f"sale {i}",
                        created_at=now + timedelta(seconds=i),
                        expires_in=expires,
                    ),
                )
    finally:
        await pool.close()

    async def reported() -> dict[str, float] | None:
        s = await exporter.samples()
        totals = {k: v for k, v in s.items() if k.startswith("coupon_total_quantity{")}
        return s if len(totals) == 2 else None

    samples = await wait_until(reported, 30, "two coupons' gauges")
    totals = sorted(v for k, v in samples.items() if k.startswith("coupon_total_quantity{"))
    assert totals == [20, 30]  # the newest two active ones (cap 2); the expired one never
    remaining = sorted(v for k, v in samples.items() if k.startswith("coupon_remaining_quantity{"))
    assert remaining == [20, 30]
    assert samples["coupon_lag_exporter_coupons_truncated"] == 1


def _reading(partition: int, committed: int, lag: int) -> PartitionLag:
    return PartitionLag(partition, log_start=0, log_end=committed + lag, committed=committed)


def test_drain_estimate_is_lag_over_the_recent_commit_rate() -> None:
    drain = DrainEstimator(window_s=60)
    drain.observe(0, [_reading(0, 100, 50)])
    assert drain.drain_seconds(_reading(0, 100, 50)) == math.inf  # one observation: no rate yet
    drain.observe(10, [_reading(0, 200, 50)])  # 100 messages in 10 s
    assert drain.drain_seconds(_reading(0, 200, 50)) == pytest.approx(5.0)
    assert drain.drain_seconds(_reading(0, 200, 0)) == 0
    for t in range(20, 200, 10):  # stalled for longer than the window: no progress, infinite
        drain.observe(t, [_reading(0, 200, 50)])
    assert drain.drain_seconds(_reading(0, 200, 50)) == math.inf
    drain.observe(200, [_reading(0, 5, 1)])  # offsets reset: history starts over
    assert drain.rate(0) == 0
