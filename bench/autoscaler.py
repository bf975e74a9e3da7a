"""``python -m bench.autoscaler``: the local autoscaler of ``make run`` (app/local/scaler.py) as a
process of its own, so a bench run can meter what it costs during a sale.

It reads the lag and decides as ``coupon-issuer dev --autoscale`` does (the same reader, policy and
spec), every ``poll_seconds``. Its actuator only records the wish: the bench's recipe keeps its N
consumers, so every run compared meets the same pool. Settings come from the environment
(``COUPON_*``, as every child of the bench); the consumer count from ``BENCH_CONSUMERS``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os

from app.adapters.kafka_lag import ReconnectingLagReader
from app.config import Settings
from app.local.scaler import LocalScaler
from app.local.stack import dev_scaling_spec
from app.processes.lifecycle import stop_event_on_signals

log = logging.getLogger(__name__)


class FixedPool:
    """N consumers that stay N; what the policy asked for is logged, not done."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.wished: list[int] = []

    def count(self) -> int:
        return self.n

    def scale_to(self, n: int) -> None:
        self.wished.append(n)


async def run(settings: Settings, consumers: int) -> None:
    stop = stop_event_on_signals()
    lag = ReconnectingLagReader(settings.kafka_bootstrap)
    read = functools.partial(lag.read, settings.topic, settings.consumer_group)
    pool = FixedPool(consumers)
    try:
        await LocalScaler(read, pool, dev_scaling_spec(settings)).run(stop)
    finally:
        await lag.close()
        log.warning("autoscaler: %d decision(s) to resize, none acted on", len(pool.wished))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(Settings(), int(os.environ.get("BENCH_CONSUMERS", "1"))))
