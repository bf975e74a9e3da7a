"""What a bench run does: sizes, concurrency, which phases; built from the command line."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.local.processes import absolute

# The sale runs the API as the product does by default (COUPON_API_WORKERS; the chart runs one
# worker per pod): on these 2 cores a second worker raised the API's CPU per issued coupon
# 1.16-1.35x and issued no faster (docs/performance.md).
API_WORKERS = Settings.model_fields["api_workers"].default


def cores() -> int:
    """CPUs this process may run on (the container's, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class BenchOptions:
    requests: int = 100_000
    duplicate_ratio: float = 0.05
    coupons_per_partition: int = 2
    stock: int | None = None  # per coupon; None: 90% of the coupon's distinct users
    concurrency: int = 64
    generators: int = 1
    api_workers: int = API_WORKERS
    consumers: int = 3
    partitions: int = 3
    max_load_seconds: float = 120.0
    drain_timeout_s: float = 60.0
    backlog: int = 100_000  # the drain phase's pre-produced burst
    naive_seconds: float = 8.0
    naive_backlog: int = 20_000
    ceilings: bool = True
    baseline: bool = True
    drain_phase: bool = True
    flash_sale: bool = True
    api_limits: bool = True  # wrk: ceiling / press / status / burst, current vs baseline
    api_seconds: float = 8.0  # per wrk run
    api_rounds: int = 2  # interleaved rounds of every variant
    baseline_ref: str | None = None  # a git revision to measure the API phases against
    sale_baseline_ref: str | None = None  # a git revision to run the whole-system sale against
    sale_rounds: int = 1  # sale runs of each variant, alternating who goes first
    # presses of an unrecorded sale before the compared ones (0: none): the broker's JVM the run
    # started compiles its hot paths during its first sale, which would charge the first variant
    sale_warmup: int = 10_000
    # at most this many warm-up sales: they repeat until the broker's compiler threads settle
    sale_warmups: int = 2
    # settings (COUPON_* variables) of the current code's sale only: a knob against the baseline
    sale_env: tuple[tuple[str, str], ...] = ()
    # the same for the wrk phases' current API (its worker and its consumer)
    api_env: tuple[tuple[str, str], ...] = ()
    profile: bool = False  # the sale's Redis commands and PostgreSQL statements (bench/profile.py)
    progress: bool = True
    keep: bool = False
    seed: int = 6
    json_path: Path | None = None
    plot_path: Path | None = None
    log_dir: Path | None = None


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``python -m bench`` options."""
    d = BenchOptions()
    add = parser.add_argument
    add("--requests", type=int, default=d.requests, help="presses sent through the API")
    add("--duplicates", type=float, default=d.duplicate_ratio, help="share of repeated presses")
    add("--coupons-per-partition", type=int, default=d.coupons_per_partition)
    add("--stock", type=int, default=None, help="stock per coupon (default: 90%% of its users)")
    add("--concurrency", type=int, default=d.concurrency, help="requests in flight, in total")
    add("--generators", type=int, default=d.generators, help="load-generator processes")
    add(
        "--api-workers",
        type=int,
        default=d.api_workers,
        help="API processes of the sale and of the wrk phases, for the baseline too"
        f" (default: COUPON_API_WORKERS's, {d.api_workers})",
    )
    add(
        "--partitions", type=int, default=None, help="topic partitions (default: COUPON_PARTITIONS)"
    )
    add("--consumers", type=int, default=None, help="consumer processes (default: = partitions)")
    add("--max-load-seconds", type=float, default=d.max_load_seconds, help="stop sending after")
    add(
        "--drain-timeout",
        type=float,
        default=d.drain_timeout_s,
        help="wait this long to drain (the wrk phases' row check: this long without a new row)",
    )
    add("--backlog", type=int, default=d.backlog, help="messages in the consumer drain phase")
    add("--naive-seconds", type=float, default=d.naive_seconds, help="naive baseline duration")
    add("--no-ceilings", action="store_true", help="skip the PostgreSQL/Redis/broker limits")
    add("--no-baseline", action="store_true", help="skip the one-by-one consumer baseline")
    add("--no-drain-phase", action="store_true", help="skip the consumer backlog drain phase")
    add("--no-flash-sale", action="store_true", help="skip the HTTP flash sale")
    add("--no-api-limits", action="store_true", help="skip the wrk ceiling/press/status/burst")
    add("--api-seconds", type=float, default=d.api_seconds, help="seconds per wrk run")
    add("--api-rounds", type=int, default=d.api_rounds, help="interleaved rounds of wrk runs")
    add(
        "--baseline",
        default=None,
        metavar="REF",
        help="git revision whose API the wrk phases also measure, side by side (the 'before')",
    )
    add(
        "--sale-baseline",
        default=None,
        metavar="REF",
        help="git revision whose whole stack the flash sale also runs, one after the other",
    )
    add("--sale-rounds", type=int, default=d.sale_rounds, help="sale runs of each variant")
    add(
        "--sale-warmup",
        type=int,
        default=d.sale_warmup,
        help="presses of an unrecorded sale before compared ones (warms the broker's JIT; 0: none)",
    )
    add(
        "--sale-warmups",
        type=int,
        default=d.sale_warmups,
        help="most warm-up sales: they repeat until the broker's JIT compiler spent under"
        " 5 us per issued coupon in the last one",
    )
    add(
        "--sale-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of the current code's sale only (a setting against the"
        " baseline: --sale-baseline HEAD --sale-env COUPON_BATCH_INTERVAL_MS=100)",
    )
    add(
        "--api-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of the wrk phases' current code only (against the"
        " baseline: --baseline HEAD --api-env COUPON_PRODUCER_LINGER_MS=0)",
    )
    add("--profile", action="store_true", help="the sale's Redis commands and SQL statements")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--keep", action="store_true", help="keep the bench schemas (for inspection)")
    add("--seed", type=int, default=d.seed)
    # Absolute: the child processes and wrk that get these paths run in other directories.
    add("--json", type=absolute, default=None, help="write the report as JSON here")
    add("--plot", type=absolute, default=None, help="write lag / issues/s / replicas plot (PNG)")
    add("--log-dir", type=absolute, default=None, help="child process logs (default: a temp dir)")


def options_from(args: argparse.Namespace, default_partitions: int) -> BenchOptions:
    partitions = args.partitions or default_partitions
    return BenchOptions(
        requests=args.requests,
        duplicate_ratio=args.duplicates,
        coupons_per_partition=args.coupons_per_partition,
        stock=args.stock,
        concurrency=args.concurrency,
        generators=max(1, args.generators),
        api_workers=max(1, args.api_workers),
        consumers=args.consumers or partitions,
        partitions=partitions,
        max_load_seconds=args.max_load_seconds,
        drain_timeout_s=args.drain_timeout,
        backlog=args.backlog,
        naive_seconds=args.naive_seconds,
        naive_backlog=max(1000, min(args.backlog, 20_000)),
        ceilings=not args.no_ceilings,
        baseline=not args.no_baseline,
        drain_phase=not args.no_drain_phase,
        flash_sale=not args.no_flash_sale,
        api_limits=not args.no_api_limits,
        api_seconds=args.api_seconds,
        api_rounds=max(1, args.api_rounds),
        baseline_ref=args.baseline or None,
        sale_baseline_ref=args.sale_baseline or None,
        sale_rounds=max(1, args.sale_rounds),
        sale_warmup=max(0, args.sale_warmup),
        sale_warmups=max(1, args.sale_warmups),
        sale_env=tuple(_name_value(item, "--sale-env") for item in args.sale_env),
        api_env=tuple(_name_value(item, "--api-env") for item in args.api_env),
        profile=args.profile,
        progress=not args.no_progress,
        keep=args.keep,
        seed=args.seed,
        json_path=args.json,
        plot_path=args.plot,
        log_dir=args.log_dir,
    )


def _name_value(item: str, option: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{option} wants NAME=VALUE, not {item!r}")
    return name, value
