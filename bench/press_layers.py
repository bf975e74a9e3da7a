"""``python -m bench.press_layers``: where the API's CPU per press goes, layer by layer.

``admit_press`` (what both HTTP paths of a press call: api/admission.py) is run in this process for
``presses`` presses, ``in_flight`` at a time, four ways: with the gate and the publisher stubbed,
with the real Redis gate, with the real Kafka publisher, and with both. What this process spends
per press in each (its own CPU: the servers' is the sale's table) tells the layers apart: the real
gate minus the stubs is redis-py and the gate's batching; the real publisher minus the stubs is
aiokafka and the publisher. The HTTP server's share is the bench's bare-ASGI ceiling. Rounds
interleave the four, in a rotated order, so a busy moment of the box falls on each.

Each coupon is pinned to its partition, as the API creates coupons: a press then names its
partition, and aiokafka's partitioner (murmur2 in Python, 6 µs a press by timeit) is not run.

Redis and the broker are found or started as ``make run`` does (``app.local.stack.local_systems``:
the given URLs, else servers of its own, removed at the end), under names of its own
(``harness.isolated``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import statistics
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import uvloop

from app.adapters import kafka, redis_client
from app.adapters.rate_limit import RateLimiter
from app.adapters.redis_gate import GateAnswer, RedisGate
from app.api.admission import admit_press
from app.api.services import Services
from app.config import Settings
from app.domain.codec import IssueRequest
from app.domain.outcomes import GateOutcome
from app.local.stack import local_systems
from harness import isolated

VARIANTS = ("stubs", "redis gate", "kafka publish", "both")
_COUPONS = 6  # presses spread over a few coupons, as a sale's


@dataclass(frozen=True)
class LayerCosts:
    """Microseconds of this process's CPU per press, one list entry per round."""

    us_per_press: dict[str, list[float]]
    presses: int
    in_flight: int

    def median(self, variant: str) -> float:
        return statistics.median(self.us_per_press[variant])

    def layers(self) -> dict[str, float]:
        """Medians: our code alone, what the gate and the publish add, all of it."""
        base = self.median("stubs")
        return {
            "admission (gate and publisher stubbed)": base,
            "+ the Redis gate (redis-py, the batcher)": self.median("redis gate") - base,
            "+ the Kafka publish (aiokafka, its ack)": self.median("kafka publish") - base,
            "all of it": self.median("both"),
        }


class _StubGate:
    async def reserve(self, *_: Any) -> GateAnswer:
        return GateAnswer(GateOutcome.ACCEPTED, 0, 0)


class _StubPublisher:
    async def publish(self, request: IssueRequest, partition: int | None = None) -> int:
        return 0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(settings: Settings, presses: int, in_flight: int, rounds: int) -> LayerCosts:
    """Run the four variants ``rounds`` times each against the servers ``settings`` name."""
    await kafka.ensure_topics(settings.kafka_bootstrap, kafka.wanted_topics(settings))
    redis = redis_client.connect_api(settings)
    producer = kafka.make_producer(
        settings.kafka_bootstrap,
        settings.producer_linger_ms,
        settings.publish_timeout_ms,
        settings.producer_max_batch_bytes,
    )
    await producer.start()
    gate = RedisGate(redis, settings.redis_prefix)
    publisher = kafka.Publisher(producer, settings.topic, settings.publish_timeout_ms / 1000)
    stub_gate, stub_publisher = (
        cast(RedisGate, _StubGate()),
        cast(kafka.Publisher, _StubPublisher()),
    )
    limiter = RateLimiter(redis, settings.redis_prefix)
    services = {
        "stubs": _services(settings, limiter, stub_gate, stub_publisher),
        "redis gate": _services(settings, limiter, gate, stub_publisher),
        "kafka publish": _services(settings, limiter, stub_gate, publisher),
        "both": _services(settings, limiter, gate, publisher),
    }
    costs: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        coupons = [uuid.uuid4() for _ in range(_COUPONS)]
        for coupon in coupons:  # stock for every press: each is accepted and published
            await gate.load(
                coupon,
                presses * rounds * 4,
                datetime.now(UTC) + timedelta(hours=1),
                [],
                partition=await publisher.partition_for_coupon(str(coupon).encode()),
            )
        users = (f"layers-{n}" for n in itertools.count(1))
        await _run(services["both"], coupons, users, in_flight, in_flight)  # warm-up
        for r in range(rounds):
            for variant in VARIANTS[r % 4 :] + VARIANTS[: r % 4]:
                costs[variant].append(
                    await _run(services[variant], coupons, users, presses, in_flight)
                )
    finally:
        await producer.stop()
        await redis.aclose()
    return LayerCosts(costs, presses, in_flight)


def _services(
    settings: Settings, limiter: RateLimiter, gate: RedisGate, pub: kafka.Publisher
) -> Services:
    """What ``admit_press`` reads: the settings, the limiter, the gate and the publisher."""
    none: Any = None  # the pool, the feed and the loader: a press on a loaded gate needs none
    return Services(
        settings=settings,
        pool=none,
        gate=gate,
        publisher=pub,
        limiter=limiter,
        feed=none,
        loader=none,
    )


async def _run(
    svc: Services, coupons: list[uuid.UUID], users: Iterator[str], presses: int, in_flight: int
) -> float:
    """µs of this process's CPU per press, every press accepted (else RuntimeError)."""
    per_task = max(1, presses // in_flight)

    async def presser() -> None:
        for _ in range(per_task):
            user = next(users)
            answer = await admit_press(svc, coupons[hash(user) % len(coupons)], user, None, "-")
            if answer.status_code != 202:
                raise RuntimeError(f"a press was refused: {bytes(answer.body)!r}")

    before = _cpu_seconds()
    await asyncio.gather(*(presser() for _ in range(in_flight)))
    return (_cpu_seconds() - before) / (per_task * in_flight) * 1e6


def report(costs: LayerCosts, say: Callable[[str], None] = print) -> None:
    say(
        f"API CPU per press in process, µs (median of {len(costs.us_per_press['stubs'])} rounds;"
        f" {costs.presses:,} presses a round, {costs.in_flight} in flight):"
    )
    for name, value in costs.layers().items():
        say(f"  {name:42s} {value:7.1f}")
    for variant in VARIANTS:
        rounds = ", ".join(f"{v:.1f}" for v in costs.us_per_press[variant])
        say(f"  rounds, {variant:14s} {rounds}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.press_layers", description=__doc__)
    parser.add_argument("--presses", type=int, default=20_000, help="presses per variant and round")
    parser.add_argument("--in-flight", type=int, default=32, help="presses awaited at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url", help="a Redis to use (default: start one)")
    parser.add_argument("--kafka-bootstrap", help="a broker to use (default: start one)")
    args = parser.parse_args()
    given = {"redis_url": args.redis_url, "kafka_bootstrap": args.kafka_bootstrap}
    with local_systems(Settings(**{k: v for k, v in given.items() if v})) as (found, _):
        settings = isolated(found, "press_layers")
        report(uvloop.run(measure(settings, args.presses, args.in_flight, args.rounds)))


if __name__ == "__main__":
    main()
