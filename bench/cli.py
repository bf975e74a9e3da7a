"""The bench run: start a private stack, run the phases, print / write the report."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from app.adapters import redis_client
from app.config import Settings
from app.local.stack import local_systems
from bench import api_limits, db, phases, report, whole_system, wrk
from bench.cpu import broker_pids, server_groups
from bench.options import BenchOptions, add_bench_arguments, cores, options_from
from bench.progress import Bar

__all__ = ["add_bench_arguments", "run_bench"]


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    """Run the benchmark; exit code 1 when a correctness check fails (the sale's, or a 202 without
    its row in the wrk phases), else 0."""
    opts = options_from(args, settings.partitions)
    result = bench(settings, opts)
    report.print_table(result)
    if opts.json_path:
        report.write_json(result, opts.json_path)
        print(f"JSON report: {opts.json_path}")
    if opts.plot_path:
        report.write_plot(result, opts.plot_path)
        print(f"plot: {opts.plot_path}")
    return 0 if _correct(result) else 1


def _correct(result: dict[str, Any]) -> bool:
    """The sales' correctness checks and the wrk phases' row check (True when not run)."""
    ok = bool(result.get("sale", {}).get("correctness", {}).get("ok", True))
    sales = result.get("whole_system", {})
    ok = ok and all(sales[v]["correct"] for v in ("current", "baseline") if v in sales)
    api = result.get("api", {})
    return ok and all(api[v]["outcomes"]["ok"] for v in ("current", "baseline") if v in api)


def bench(settings: Settings, opts: BenchOptions) -> dict[str, Any]:
    """Start broker (and Redis / PostgreSQL if none answer), run every enabled phase."""
    n = cores()
    log_dir = opts.log_dir or Path(tempfile.mkdtemp(prefix="coupon-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    load_before = round(os.getloadavg()[0], 2)
    started = time.monotonic()
    # The servers it starts flush to disk as a deployment's do (PostgreSQL's fsync and
    # synchronous commits, Redis's append-only file): their cost is part of a sale's.
    stack = local_systems(settings, durable=True)
    try:
        with stack as (resolved, started_procs), Bar(opts.progress) as bar:
            broker = broker_pids(started_procs)
            extra = server_groups(started_procs)
            flushed = sorted(extra)  # the servers it started; one it did not keeps its own settings
            ctx = phases.RunContext(
                resolved, opts, log_dir, bar, n, extra_pids=extra, broker_pids=broker
            )
            result: dict[str, Any] = {}
            try:
                result = asyncio.run(_phases(ctx))
            finally:
                if opts.keep or not _correct(result):
                    # evidence of a failed check stays: the schemas and Redis keys, named here
                    print(f"kept for inspection: schemas {', '.join(ctx.schemas)}", file=sys.stderr)
                else:
                    asyncio.run(_clean(resolved, ctx.schemas, ctx.redis_prefixes))
    except KeyboardInterrupt:  # Ctrl-C, or a SIGTERM (python -m bench): its temp logs go too
        if opts.log_dir is None:
            shutil.rmtree(log_dir, ignore_errors=True)
        raise
    result["machine"] = {
        "cores": n,
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2),
        "flushed_servers": flushed,
    }
    result["options"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()}
    result["ratios"] = report.ratios(result)
    result["wall_s"] = time.monotonic() - started
    result["logs"] = str(log_dir)
    if opts.log_dir is None and _correct(result):
        shutil.rmtree(log_dir, ignore_errors=True)
        result["logs"] = None
    return result


async def _phases(ctx: phases.RunContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ctx.opts.ceilings:
        out["limits"] = await phases.measure_ceilings(ctx)
    if ctx.opts.drain_phase:
        out["drain"] = await phases.consumer_drain(ctx)
    if ctx.opts.baseline:
        out["baseline"] = await phases.naive_baseline(ctx)
    if ctx.opts.flash_sale:
        out.update(await whole_system.sales(ctx))
    if ctx.opts.api_limits:
        if wrk.available():
            out["api"] = await api_limits.api_limits(ctx)
        else:
            out["api"] = {"skipped": "wrk is not installed (make bench installs it)"}
    return out


async def _clean(settings: Settings, schemas: list[str], prefixes: list[str]) -> None:
    """Drop the run's schemas and Redis keys (topics vanish with a broker we started); on a
    Redis Cluster the SCAN walks every primary and each DEL is split per slot."""
    try:
        await db.drop_schemas(settings.database_url, schemas)
    except Exception as exc:  # cleaning must not hide the run's own result or error
        print(f"warning: could not drop bench schemas: {exc!r}", file=sys.stderr)
    client = redis_client.connect(settings)
    try:
        for prefix in prefixes:
            batch: list[bytes] = []
            async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await client.delete(*batch)
                    batch = []
            if batch:
                await client.delete(*batch)
    except Exception as exc:
        print(f"warning: could not delete bench Redis keys: {exc!r}", file=sys.stderr)
    finally:
        await client.aclose()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
