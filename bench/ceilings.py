"""The machine's limits, measured in the same run: what PostgreSQL, Redis and the broker can do
on their own, with the service's own statements, script and producer settings.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import redis.asyncio as aioredis

from app.adapters import kafka, postgres, postgres_setup
from app.adapters.redis_gate import RedisGate
from app.domain.codec import IssueRequest, encode
from app.domain.decision import Decision
from app.domain.outcomes import IssueStatus


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` operations in ``seconds``."""

    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


async def postgres_insert_rate(
    dsn: str, schema: str, rows: int, batch: int, connections: int, time_limit_s: float
) -> Rate:
    """Raw set-based insert of issue rows (adapters' ``record_decisions``), one transaction per
    batch, ``connections`` writers in parallel: the ceiling of the consumer's write path."""
    await postgres_setup.apply_migrations(dsn, schema)
    pool = await postgres_setup.create_pool(dsn, schema, connections, "coupon-bench-ceiling")
    coupon = uuid.uuid4()
    now = datetime.now(UTC)
    batches = [
        [
            Decision(IssueRequest(coupon, f"ceil-u{i}", uuid.uuid4(), now), IssueStatus.ISSUED)
            for i in range(start, min(start + batch, rows))
        ]
        for start in range(0, rows, batch)
    ]
    written = 0
    stop_at = time.perf_counter() + time_limit_s

    async def writer(mine: Sequence[list[Decision]]) -> None:
        nonlocal written
        for decisions in mine:
            if time.perf_counter() > stop_at:
                return
            async with postgres.transaction(pool) as conn:
                await postgres.record_decisions(conn, decisions)
            written += len(decisions)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(writer(batches[i::connections]) for i in range(connections)))
        return Rate(written, time.perf_counter() - started)
    finally:
        await pool.close()


async def redis_gate_rates(
    redis_url: str, prefix: str, calls: int, concurrency: int, pipeline: int, time_limit_s: float
) -> tuple[Rate, Rate]:
    """The real gate script: (pipelined EVALSHA calls/s, ``RedisGate.reserve`` calls/s from one
    process with ``concurrency`` tasks). The first is Redis's ceiling; the second is what one
    Python process's client can drive."""
    client = aioredis.from_url(redis_url)
    try:
        gate = RedisGate(client, prefix)
        coupon = uuid.uuid4()
        await gate.load(coupon, 10_000_000, datetime.now(UTC) + timedelta(hours=1), holders=())
        pipelined = await _pipelined(
            client, gate, coupon, calls, pipeline, concurrency, time_limit_s
        )
        direct = await _through_gate(gate, coupon, calls // 4, concurrency, time_limit_s)
        await client.delete(*gate.keys(coupon))
        return pipelined, direct
    finally:
        await client.aclose()


async def _pipelined(
    client: aioredis.Redis,
    gate: RedisGate,
    coupon: UUID,
    calls: int,
    pipeline: int,
    concurrency: int,
    time_limit_s: float,
) -> Rate:
    done = 0
    next_start = 0
    stop_at = time.perf_counter() + time_limit_s
    now = datetime.now(UTC)
    await gate.reserve(coupon, "warm", uuid.uuid4(), now)  # loads the script's SHA

    async def worker() -> None:
        nonlocal done, next_start
        while next_start < calls and time.perf_counter() < stop_at:
            start = next_start
            next_start += pipeline
            async with client.pipeline(transaction=False) as pipe:
                for i in range(start, min(start + pipeline, calls)):
                    await gate.queue_reserve(pipe, coupon, f"p{i}", uuid.uuid4(), now)
                answers = await pipe.execute()
            done += len(answers)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, concurrency // 16))))
    return Rate(done, time.perf_counter() - started)


async def _through_gate(
    gate: RedisGate, coupon: UUID, calls: int, concurrency: int, time_limit_s: float
) -> Rate:
    done = 0
    stop_at = time.perf_counter() + time_limit_s
    now = datetime.now(UTC)

    async def worker(offset: int) -> None:
        nonlocal done
        for i in range(offset, calls, concurrency):
            if time.perf_counter() > stop_at:
                return
            await gate.reserve(coupon, f"g{i}", uuid.uuid4(), now)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return Rate(done, time.perf_counter() - started)


async def broker_produce_rate(
    bootstrap: str,
    topic: str,
    coupon_ids: Sequence[str],
    messages: int,
    linger_ms: int,
    in_flight: int,
    time_limit_s: float,
    user_prefix: str = "drain-u",
) -> Rate:
    """Produce real issue requests (acks=all, the service's producer) as fast as the broker
    acknowledges them; the topic keeps them, as the backlog of the drain phase."""
    producer = kafka.make_producer(bootstrap, linger_ms, 30_000)
    await producer.start()
    coupons = [UUID(c) for c in coupon_ids]
    try:
        acked = 0
        started = time.perf_counter()
        stop_at = started + time_limit_s
        for chunk_start in range(0, messages, in_flight):
            if time.perf_counter() > stop_at:
                break
            now = datetime.now(UTC)
            futures = []
            for i in range(chunk_start, min(chunk_start + in_flight, messages)):
                request = IssueRequest(
                    coupons[i % len(coupons)], f"{user_prefix}{i}", uuid.uuid4(), now
                )
                futures.append(await producer.send(topic, encode(request), key=request.key()))
            await asyncio.gather(*futures)
            acked += len(futures)
        return Rate(acked, time.perf_counter() - started)
    finally:
        await producer.stop()
