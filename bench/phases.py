"""The phases of a bench run, each on its own schema / topic / group / Redis prefix:
the limits of the real systems, the consumer drain of a burst and the one-by-one baseline; the
flash sale through the HTTP API is in flash_sale.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.adapters.kafka_lag import LagReader
from app.config import Settings
from app.local.stack import prepare
from bench import ceilings, db
from bench.cpu import BROKER, CpuMeter, process_groups
from bench.options import BenchOptions
from bench.progress import Bar
from bench.sampling import Sampler
from harness import ServiceProcesses, coupon_ids_covering, isolated, wait_until

# What the bench sets alike for every variant. A baseline revision keeps its own default of any
# other setting: a default this code changed (the producer's linger, say) is part of the change.
_PINNED_SETTINGS = ("api_workers", "partitions")


@dataclass
class RunContext:
    """What every phase needs, and what must be cleaned up at the end."""

    base: Settings  # the resolved systems (broker, Redis, PostgreSQL)
    opts: BenchOptions
    log_dir: Path
    bar: Bar
    cores: int
    extra_pids: dict[str, list[int]] = field(default_factory=dict)  # postgres, redis we started
    broker_pids: list[int] | None = None  # the Kafka JVMs we started; None: an external broker
    schemas: list[str] = field(default_factory=list)
    redis_prefixes: list[str] = field(default_factory=list)

    def isolated(self, label: str, **overrides: object) -> Settings:
        settings = isolated(
            self.base, f"bench_{label}", partitions=self.opts.partitions, **overrides
        )
        self.schemas.append(settings.db_schema)
        self.redis_prefixes.append(settings.redis_prefix)
        return settings

    def server_groups(self) -> dict[str, list[int]]:
        """The servers the run started, to meter beside a phase's own processes; the broker's
        JVM as ``broker`` (absent when the broker is external)."""
        broker = {BROKER: self.broker_pids} if self.broker_pids is not None else {}
        return {**self.extra_pids, **broker}

    def processes(self, settings: Settings, revision: bool = False) -> ServiceProcesses:
        """The harness for one phase's API / consumers, logging to a folder of the phase's own;
        ``revision``: they run a baseline revision's code, with its own defaults."""
        keep = _PINNED_SETTINGS if revision else None
        return ServiceProcesses(settings, self.log_dir / settings.consumer_group, keep=keep)


async def lag_reader(bootstrap: str) -> LagReader | None:
    try:
        return await LagReader(bootstrap, timeout_s=5).start()
    except Exception:  # the plot loses its lag line; the run goes on
        return None


# --- limits ------------------------------------------------------------------------------------


async def measure_ceilings(ctx: RunContext) -> dict[str, Any]:
    """Raw PostgreSQL batched insert and raw Redis gate script rates."""
    scratch = ctx.isolated("scratch")
    rows = max(10_000, min(300_000, ctx.opts.backlog * 2))
    calls = max(5_000, min(200_000, ctx.opts.backlog * 2))
    ctx.bar.phase("limit: PG insert", 1)
    pg = await ceilings.postgres_insert_rate(
        scratch.database_url,
        scratch.db_schema,
        rows=rows,
        batch=scratch.batch_max,
        connections=ctx.opts.partitions,
        time_limit_s=6,
    )
    ctx.bar.update(1, f"{pg.per_second:,.0f} rows/s")
    ctx.bar.phase("limit: Redis gate", 1)
    pipelined, direct = await ceilings.redis_gate_rates(
        scratch.redis_url,
        scratch.redis_prefix,
        calls=calls,
        concurrency=64,
        pipeline=500,
        time_limit_s=4,
    )
    ctx.bar.update(1, f"{pipelined.per_second:,.0f} calls/s")
    return {
        "postgres_insert_rows_per_s": pg.per_second,
        "postgres_insert": {
            "rows": pg.count,
            "seconds": pg.seconds,
            "batch": scratch.batch_max,
            "connections": ctx.opts.partitions,
        },
        "redis_gate_pipelined_per_s": pipelined.per_second,
        "redis_gate_one_process_per_s": direct.per_second,
    }


async def fill_topic(ctx: RunContext, settings: Settings, messages: int) -> ceilings.Rate:
    """Create topic + schema (coupons keyed to every partition) and produce ``messages``."""
    await asyncio.to_thread(prepare, settings)
    coupons = coupon_ids_covering(ctx.opts.partitions, ctx.opts.coupons_per_partition)
    await db.create_schema_with_coupons(
        settings.database_url, settings.db_schema, coupons, stock=messages
    )
    return await ceilings.broker_produce_rate(
        settings.kafka_bootstrap,
        settings.topic,
        coupons,
        messages,
        linger_ms=5,
        in_flight=5000,
        time_limit_s=30,
    )


# --- consumer drain ----------------------------------------------------------------------------


async def consumer_drain(ctx: RunContext) -> dict[str, Any]:
    """A burst already on the topic; N consumers start and drain it. Issues/s from first to last
    row, and the whole drain time including process start and group join."""
    settings = ctx.isolated("drain")
    ctx.bar.phase("limit: broker produce", ctx.opts.backlog)
    produced = await fill_topic(ctx, settings, ctx.opts.backlog)
    ctx.bar.update(produced.count, f"{produced.per_second:,.0f} msg/s (acks=all)")
    ctx.bar.phase(f"drain: {ctx.opts.consumers} consumers", produced.count)
    result = await _drain(ctx, settings, produced.count, ctx.opts.consumers, {})
    return {"broker_produce_per_s": produced.per_second, "backlog": produced.count, **result}


async def naive_baseline(ctx: RunContext) -> dict[str, Any]:
    """The old design: one consumer, one message per poll, transaction and commit."""
    settings = ctx.isolated("naive")
    produced = await fill_topic(ctx, settings, ctx.opts.naive_backlog)
    ctx.bar.phase("baseline: one-by-one", produced.count)
    return await _drain(
        ctx, settings, produced.count, 1, {"COUPON_BATCH_MAX": "1"}, ctx.opts.naive_seconds
    )


async def _drain(
    ctx: RunContext,
    settings: Settings,
    expected: int,
    consumers: int,
    extra_env: dict[str, str],
    measure_s: float | None = None,
) -> dict[str, Any]:
    procs = ctx.processes(settings)
    conn = await db.connect(settings.database_url, settings.db_schema)
    reader = await lag_reader(settings.kafka_bootstrap)
    sampler = Sampler(
        conn, reader, settings.topic, settings.consumer_group, lambda: len(procs.live_consumers())
    )
    try:
        await sampler.__aenter__()
        started = time.monotonic()
        for _ in range(consumers):
            procs.add_consumer(extra_env)
        # the bench's own connection (row counts) is not the system's work
        meter = CpuMeter({**process_groups(procs), **ctx.server_groups()}, {conn.get_server_pid()})
        meter.start()
        first: tuple[float, int] | None = None
        last = await sampler.sample()

        async def drained_or_measured() -> bool:
            nonlocal first, last
            last = await sampler.sample()
            ctx.bar.update(last.processed, f"{last.replicas} consumer(s)")
            if first is None and last.processed > 0:
                first = (last.t, last.processed)
            if measure_s is not None and first is not None and last.t - first[0] >= measure_s:
                return True
            return last.processed >= expected

        timeout = started + ctx.opts.drain_timeout_s + 30 - time.monotonic()
        with contextlib.suppress(TimeoutError):  # the report says how far it got
            await wait_until(drained_or_measured, timeout, "the drain")
        meter.stop()
        span = (last.t - first[0]) if first else 0.0
        sampled_rate = (last.processed - first[1]) / span if first and span > 0 else 0.0
        batches = await db.batch_throughput(conn)
        return {
            "consumers": consumers,
            "processed": last.processed,
            "drained": last.processed >= expected,
            # steady rate from the batches' own timestamps (first to last batch transaction);
            # the sampled rate (0.1 s polling from the first row seen) is kept beside it
            "issues_per_s": batches if measure_s is None else sampled_rate,
            "sampled_issues_per_s": sampled_rate,
            "measured_s": span,
            "drain_s_from_start": last.t,
            "batch_max": int(extra_env.get("COUPON_BATCH_MAX", settings.batch_max)),
            "cpu_seconds": meter.used,
            "cpu_share": meter.shares(ctx.cores),
            "timeseries": sampler.as_dicts(),
        }
    finally:
        await sampler.__aexit__()
        await asyncio.to_thread(procs.terminate)
        if reader:
            await reader.stop()
        await conn.close()
