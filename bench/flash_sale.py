"""The flash sale through the HTTP API: load generators -> API (gate + produce) -> consumers ->
PostgreSQL, on a schema / topic / group / Redis prefix of its own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from app.config import Settings
from app.local.processes import ManagedProcess, detach_and_die_with_parent
from app.local.stack import child_env, prepare
from bench import db, loadgen, profile
from bench.cpu import (
    AUTOSCALER,
    BROKER,
    COMPONENTS,
    EXTERNAL_BROKER,
    LAG_EXPORTER,
    POSTGRES,
    CpuMeter,
    jit_cpu_seconds,
    local_postmaster,
    per_component,
    process_groups,
)
from bench.options import BenchOptions
from bench.phases import RunContext, lag_reader
from bench.progress import Bar
from bench.sampling import Sampler
from harness import ServiceProcesses, create_covering, wait_until
from harness.coupons import coupon_body

# Seconds the sale's stack is metered idle (up, consumers polling, no presses) before the load:
# the share of the per-press CPU that is paid whether presses come or not.
IDLE_WINDOW_S = 5.0
_ROOT = Path(__file__).resolve().parent.parent  # the checkout: bench/ is run from here


async def create_coupon(settings: Settings, stock: int, http: aiohttp.ClientSession) -> str:
    """Create one coupon through the API (as a shop would); its id."""
    url = f"http://127.0.0.1:{settings.api_port}/api/coupons"
    token = settings.admin_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    async with http.post(url, json=coupon_body(stock, "bench flash sale"), headers=headers) as r:
        if r.status != 201:
            raise RuntimeError(f"creating a coupon failed: {r.status} {await r.text()}")
        return str((await r.json())["id"])


async def _create_coupons(settings: Settings, opts: BenchOptions, stock: int) -> list[str]:
    """Create coupons through the API until each partition has ``coupons_per_partition``."""
    async with aiohttp.ClientSession() as http:
        return await create_covering(
            lambda: create_coupon(settings, stock, http),
            opts.partitions,
            opts.coupons_per_partition,
        )


def default_stock(opts: BenchOptions, coupons: int) -> int:
    distinct = round(opts.requests * (1 - opts.duplicate_ratio))
    return opts.stock or max(1, int(0.9 * distinct / coupons))


async def flash_sale(
    ctx: RunContext, variant: str = "current", env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The real path: generators -> API (gate + produce) -> consumers -> PostgreSQL, with the lag
    exporter (and its reconciler) and the local autoscaler running as they would in production.

    ``env`` is added to every process of the stack (a baseline revision's ``PYTHONPATH``).
    """
    opts = ctx.opts
    label = "sale" if variant == "current" else f"sale_{variant}"
    settings = ctx.isolated(label, api_workers=opts.api_workers)
    ctx.bar.phase(f"{label}: start stack", 1)
    await asyncio.to_thread(prepare, settings)
    procs = ctx.processes(settings, revision=variant == "baseline")
    procs.process_env.update(env or {})
    fleet: loadgen.GeneratorFleet | None = None
    sampler: Sampler | None = None
    scaler: ManagedProcess | None = None
    conn = await db.connect(settings.database_url, settings.db_schema)
    reader = await lag_reader(settings.kafka_bootstrap)
    try:
        procs.start_api()  # COUPON_API_WORKERS comes from the settings
        for _ in range(opts.consumers):
            procs.add_consumer()
        procs.start_lag_exporter()
        scaler = start_autoscaler(procs, opts.consumers)
        await procs.wait_api_ready()
        await procs.wait_for_assignment()
        n_coupons = opts.partitions * opts.coupons_per_partition
        stock = default_stock(opts, n_coupons)
        coupon_ids = await _create_coupons(settings, opts, stock)
        plan = loadgen.make_plan(coupon_ids, opts.requests, opts.duplicate_ratio, opts.seed)
        fleet = loadgen.GeneratorFleet.start(
            plan, settings.api_port, opts.generators, opts.concurrency, opts.max_load_seconds
        )
        await wait_until(fleet.all_ready, 60, "the load generators to start", 0.05)
        system = system_groups(procs, scaler, ctx)
        if opts.profile and POSTGRES not in system:
            # a profile's own server (with pg_stat_statements), when it runs on this machine
            postmaster = local_postmaster(conn.get_server_pid())
            system.update({POSTGRES: [postmaster]} if postmaster else {})
        # the bench's own connection (row counts, the checks) is not the system's work
        ours = {conn.get_server_pid()}
        meter = CpuMeter({"generators": fleet.pids(), **system}, ours)  # shares during the load
        # the whole work of the presses: from the load's start until the last accepted is a row
        whole = CpuMeter(system, ours)
        idle = CpuMeter(system, ours)
        ctx.bar.phase(f"{label}: {IDLE_WINDOW_S:.0f} s idle", 1)
        idle.start()
        await asyncio.sleep(IDLE_WINDOW_S)  # a measuring window, not a wait for a condition
        idle.stop()
        sampler = Sampler(
            conn,
            reader,
            settings.topic,
            settings.consumer_group,
            lambda: len(procs.live_consumers()),
            fleet.answered,
        )
        ctx.bar.phase(f"{label}: {opts.requests:,} presses", len(plan))
        profiled = await profile.start(settings, conn) if opts.profile else None
        await sampler.__aenter__()
        meter.start()
        whole.start()
        jvms = system.get(BROKER, [])
        jit_before = sum(map(jit_cpu_seconds, jvms))
        sampler.restart_clock()
        fleet.release()
        # generators stop sending after max_load_seconds; the margin is for their last answers
        results = await _run_load(fleet, sampler, ctx.bar, opts.max_load_seconds + 120)
        meter.stop()
        load = summarize_load(plan, results)
        ctx.bar.phase(f"{label}: drain", load["accepted"])
        drained_at = await _wait_drained(
            sampler, load["accepted"], load["unconfirmed"], opts.drain_timeout_s, ctx.bar
        )
        whole.stop()
        jit_s = sum(map(jit_cpu_seconds, jvms)) - jit_before if jvms else None
        servers = None if profiled is None else await profile.read(settings, conn, profiled)
        correctness = await db.check(
            conn,
            stock,
            load.pop("deciders"),
            load.pop("request_ids"),
            load.pop("unconfirmed_presses"),
        )
        e2e = await db.end_to_end_ms(conn)
        processed_span = await db.processed_span_s(conn)
        return {
            "variant": variant,
            "coupons": len(coupon_ids),
            "stock_per_coupon": stock,
            "api_workers": opts.api_workers,
            "consumers": opts.consumers,
            "generators": opts.generators,
            "concurrency": opts.concurrency,
            **load,
            "drain_after_last_answer_s": (
                drained_at - load["last_answer_at"] if drained_at is not None else None
            ),
            "drained": drained_at is not None,
            "consumer_processed_per_s": (
                correctness.accepted / processed_span if processed_span > 0 else 0.0
            ),
            "end_to_end_ms": e2e,
            "correctness": correctness.as_dict(),
            "cpu_seconds": meter.used,
            "cpu_share": meter.shares(ctx.cores),
            "load_wall_s": meter.wall,
            # from the load's start until the last accepted press is a row, per issued coupon
            "cpu_ms_per_issued_coupon": per_component(whole.used, correctness.issued),
            "system_cpu_seconds": whole.used,
            "system_wall_s": whole.wall,
            # coupons issued per second over that window: the load and the drain
            "issued_per_s": correctness.issued / whole.wall if whole.wall > 0 else 0.0,
            "broker_cpu": "measured" if BROKER in whole.groups else EXTERNAL_BROKER,
            # of the broker's CPU, its JIT compiler's: paid once by a long-running broker
            "broker_jit_ms_per_issued_coupon": (
                1000 * jit_s / max(1, correctness.issued) if jit_s is not None else None
            ),
            "idle_cpu_ms_per_s": {
                **{k: None for k in COMPONENTS},
                **{k: 1000 * used / max(idle.wall, 1e-9) for k, used in idle.used.items()},
                "seconds": idle.wall,
            },
            "profile": servers,
            "timeseries": sampler.as_dicts(),
        }
    finally:
        if sampler is not None:
            await sampler.__aexit__()
        if fleet is not None:
            fleet.stop()
        if scaler is not None:
            await asyncio.to_thread(scaler.stop)
        await asyncio.to_thread(procs.terminate)
        if reader:
            await reader.stop()
        await conn.close()


def system_groups(
    procs: ServiceProcesses, scaler: ManagedProcess, ctx: RunContext
) -> dict[str, list[int]]:
    """Every component of the system the run can meter, by its report name (bench/cpu.py)."""
    exporter = [procs.lag_exporter.popen.pid] if procs.lag_exporter else []
    return {
        **process_groups(procs),
        LAG_EXPORTER: exporter,
        AUTOSCALER: [scaler.popen.pid],
        **ctx.server_groups(),
    }


def start_autoscaler(procs: ServiceProcesses, consumers: int) -> ManagedProcess:
    """``python -m bench.autoscaler`` with the stack's settings and ``process_env`` (a baseline's
    ``PYTHONPATH`` comes first, so its app/ is the one imported; this checkout's bench/ after)."""
    env = child_env(procs.settings, procs.process_env, procs.keep)
    env["BENCH_CONSUMERS"] = str(consumers)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(_ROOT)) if p)
    procs.log_dir.mkdir(parents=True, exist_ok=True)
    with (procs.log_dir / "autoscaler.log").open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "bench.autoscaler"],
            env=env,
            cwd=_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=detach_and_die_with_parent,
        )
    return ManagedProcess("autoscaler", popen)


async def _run_load(
    fleet: loadgen.GeneratorFleet, sampler: Sampler, bar: Bar, timeout_s: float
) -> list[loadgen.GeneratorResult]:
    """Sample every half second until every generator has sent its result."""
    results: dict[int, loadgen.GeneratorResult] = {}

    async def all_reported() -> bool:
        s = await sampler.sample()
        bar.update(
            s.answered, f"{s.accepted:,} accepted, lag {s.lag if s.lag is not None else '?'}"
        )
        for i, pipe in enumerate(fleet.pipes):
            if i not in results and pipe.poll():
                results[i] = await asyncio.to_thread(pipe.recv)
        if len(results) == len(fleet.pipes):
            return True
        if not any(p.is_alive() for p in fleet.processes) and not any(
            pipe.poll() for pipe in fleet.pipes
        ):
            raise RuntimeError("a load generator died without a result")
        return False

    await wait_until(all_reported, timeout_s, "every load generator's result", 0.5)
    return [results[i] for i in range(len(fleet.pipes))]


async def _wait_drained(
    sampler: Sampler, accepted: int, unconfirmed: int, timeout_s: float, bar: Bar
) -> float | None:
    """time.time() when every accepted request has its outcome, or None at the timeout: a row,
    or for an unconfirmed press that never landed, the FAILED outcome the reconciler gives it
    (after ``reconcile_min_age_s``)."""

    async def drained() -> bool:
        s = await sampler.sample()
        bar.update(s.processed, f"lag {s.lag if s.lag is not None else '?'}")
        if s.processed >= accepted:
            return True
        return unconfirmed > 0 and s.processed + await db.failed_count(sampler.conn) >= accepted

    try:
        await wait_until(drained, timeout_s, "every accepted request to have an outcome")
    except TimeoutError:
        return None
    return time.time()


def _percentiles_ms(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values) * 1000
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(a.max())}


def summarize_load(
    plan: loadgen.RequestPlan, results: Sequence[loadgen.GeneratorResult]
) -> dict[str, Any]:
    """Rates, latencies, answers by reason, and what the database must show afterwards."""
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    accepted_latencies: list[float] = []
    deciders: dict[int, set[int]] = defaultdict(set)  # coupon -> users the gate decided for
    request_ids: list[str] = []
    unconfirmed: dict[str, tuple[str, int]] = {}  # request id -> (coupon id, user)
    errors: Counter[str] = Counter()
    last_answer = 0.0
    for r in results:
        request_ids.extend(r.request_ids)
        for pos, request_id in r.unconfirmed.items():
            i = r.indices[pos]
            unconfirmed[request_id] = (plan.coupon_ids[plan.coupon_index[i]], plan.user_index[i])
        errors.update(r.errors)
        for pos, code in enumerate(r.codes):
            codes[loadgen.NAMES[code]] += 1
            if code == 0:
                continue
            latencies.append(r.latencies[pos])
            last_answer = max(last_answer, r.finished_at[pos])
            if code in (loadgen.ACCEPTED, loadgen.CODES["UNCONFIRMED"]):
                accepted_latencies.append(r.latencies[pos])
            if code in loadgen.DEFINITIVE:
                i = r.indices[pos]
                deciders[plan.coupon_index[i]].add(plan.user_index[i])
    started = min(r.started_at for r in results)
    window = max(1e-9, last_answer - started)
    sent = len(latencies)
    accepted = codes["ACCEPTED"] + codes["UNCONFIRMED"]  # every 202
    cpu = sum(r.cpu_seconds for r in results)
    return {
        "sent": sent,
        "not_sent": codes.pop("NOT_SENT", 0),
        "accepted": accepted,
        "answers": dict(codes),
        "transport_errors": dict(errors),
        "load_s": window,
        "answered_per_s": sent / window,
        "accepted_per_s": accepted / window,
        "latency_ms": _percentiles_ms(latencies),
        "accepted_latency_ms": _percentiles_ms(accepted_latencies),
        "generator_cpu_s": cpu,
        "last_answer_at": last_answer,
        "unconfirmed": len(unconfirmed),
        "deciders": {plan.coupon_ids[c]: users for c, users in deciders.items()},
        "request_ids": request_ids,
        "unconfirmed_presses": unconfirmed,
    }
