"""What a sale costs the whole system, current code against a baseline revision in one run.

The flash sale (bench/flash_sale.py) runs for each variant in turn, ``rounds`` times, alternating
who goes first; each run meters every component from the load's start until the last accepted
press is issued. The summary is each variant's mean CPU ms per issued coupon by component, its
issue rate, and the ratios current / baseline.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bench import flash_sale
from bench.api_limits import baseline_env
from bench.cpu import COMPONENTS, JIT_SETTLED_MS
from bench.phases import RunContext

CURRENT, BASELINE = "current", "baseline"


async def sales(ctx: RunContext) -> dict[str, Any]:
    """The sale runs: ``sale`` (the current code's first run, the detailed report), and
    ``whole_system`` (every run, the means and the ratios)."""
    opts = ctx.opts
    variants: dict[str, dict[str, str]] = {CURRENT: dict(opts.sale_env)}
    note = None
    if opts.sale_baseline_ref:
        into = ctx.log_dir / "sale-baseline-src"
        env, note = await baseline_env(opts.sale_baseline_ref, into)
        if env is not None:
            variants[BASELINE] = env
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    names = list(variants)
    warmups = await warm_up(ctx)
    for round_no in range(opts.sale_rounds):
        order = names if round_no % 2 == 0 else names[::-1]
        for name in order:
            runs[name].append(await flash_sale.flash_sale(ctx, name, variants[name]))
    return {
        "sale": runs[CURRENT][0],
        "whole_system": {
            **summarize(runs, opts.sale_baseline_ref, note),
            "current_env": dict(opts.sale_env),
            # the broker's JIT compiler, ms per issued coupon, in each unrecorded warm-up sale
            "warmup_broker_jit_ms": warmups,
        },
    }


async def warm_up(ctx: RunContext) -> list[float | None]:
    """Unrecorded sales until the broker's JIT compiler has settled (at most ``sale_warmups``);
    each one's JIT CPU ms per issued coupon. None where the broker is not ours to read."""
    opts = ctx.opts
    if not opts.sale_warmup:
        return []
    warm = dataclasses.replace(
        ctx, opts=dataclasses.replace(opts, requests=min(opts.requests, opts.sale_warmup))
    )
    jits: list[float | None] = []
    for _ in range(max(1, opts.sale_warmups)):
        run = await flash_sale.flash_sale(warm, "warmup", {})
        jit = run.get("broker_jit_ms_per_issued_coupon")
        jits.append(jit)
        if jit is None or jit < JIT_SETTLED_MS:
            break
    return jits


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def variant_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over a variant's runs: CPU ms per issued coupon by component (None where a
    component was not metered), the issue rate, and whether every run was correct."""
    per = [r["cpu_ms_per_issued_coupon"] for r in runs]
    ms = {k: _mean([p[k] for p in per if p.get(k) is not None]) for k in (*COMPONENTS, "sum")}
    jit = _mean([j for r in runs if (j := r.get("broker_jit_ms_per_issued_coupon")) is not None])
    e2e = [r["end_to_end_ms"] for r in runs if r.get("end_to_end_ms")]
    batches = [r["profile"]["batches"] for r in runs if r.get("profile")]
    return {
        "cpu_ms_per_issued_coupon": ms,
        # what fuller batches cost in latency: accepted press to its row, mean of the runs
        "end_to_end_ms": {k: _mean([e[k] for e in e2e]) for k in ("p50", "p99")} if e2e else {},
        "batches": batches,  # batch transactions per run (with --profile)
        "outside_api_ms": (ms["sum"] or 0.0) - (ms["api"] or 0.0),
        # of the broker's share, its JIT compiler's (None: an external broker), and the sum
        # without it: what a long-running broker, which compiled long ago, would have cost
        "broker_jit_ms": jit,
        "sum_jit_aside_ms": _less(ms["sum"], jit),
        "issued_per_s": _mean([r["issued_per_s"] for r in runs]),
        "accepted_per_s": _mean([r["accepted_per_s"] for r in runs]),
        "issued": [r["correctness"]["issued"] for r in runs],
        "correct": all(r["correctness"]["ok"] for r in runs),
        "rounds": len(runs),
        # each run in the order it ran: how far apart a variant's runs are on a noisy machine
        "per_run": [
            {
                "sum_ms": r["cpu_ms_per_issued_coupon"].get("sum"),
                "api_ms": r["cpu_ms_per_issued_coupon"].get("api"),
                "cpu_ms_per_issued_coupon": r["cpu_ms_per_issued_coupon"],
                "issued_per_s": r["issued_per_s"],
                "broker_jit_ms": r.get("broker_jit_ms_per_issued_coupon"),
                "batches": r["profile"]["batches"] if r.get("profile") else None,
            }
            for r in runs
        ],
    }


def summarize(
    runs: dict[str, list[dict[str, Any]]], baseline_ref: str | None, note: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {name: variant_summary(r) for name, r in runs.items() if r}
    out["baseline_ref"] = baseline_ref
    out["baseline_note"] = note
    if CURRENT in out and BASELINE in out:
        cur, base = out[CURRENT], out[BASELINE]
        ratios = {
            k: _div(cur["cpu_ms_per_issued_coupon"][k], base["cpu_ms_per_issued_coupon"][k])
            for k in (*COMPONENTS, "sum")
        }
        ratios["outside_api"] = _div(cur["outside_api_ms"], base["outside_api_ms"])
        ratios["sum_jit_aside"] = _div(cur["sum_jit_aside_ms"], base["sum_jit_aside_ms"])
        ratios["issued_per_s"] = _div(cur["issued_per_s"], base["issued_per_s"])
        ratios["accepted_per_s"] = _div(cur["accepted_per_s"], base["accepted_per_s"])
        out["after_vs_before"] = ratios
    return out


def _less(total: float | None, part: float | None) -> float | None:
    return total - part if total is not None and part is not None else None


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
