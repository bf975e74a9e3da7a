"""The bench report: ratios, a table on stdout, JSON, and the lag / issues/s / replicas plot."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.cpu import (
    AUTOSCALER,
    BROKER,
    COMPONENTS,
    EXTERNAL_BROKER,
    JIT_SETTLED_MS,
    LAG_EXPORTER,
    NOT_MEASURED,
    POSTGRES,
    REDIS,
)

# The old (Java) system's own claimed rate, for the "x the old design" column.
OLD_KAFKA_3_PARTITIONS_PER_S = 100.0


def _get(report: dict[str, Any], *path: str) -> Any:
    node: Any = report
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def ratios(report: dict[str, Any]) -> dict[str, float | None]:
    """The comparisons the README quotes, all from numbers measured in this run."""
    consumer = _get(report, "drain", "issues_per_s")
    return {
        "consumer_vs_one_by_one": _ratio(consumer, _get(report, "baseline", "issues_per_s")),
        "consumer_vs_postgres_insert": _ratio(
            consumer, _get(report, "limits", "postgres_insert_rows_per_s")
        ),
        "api_accepted_vs_redis_gate": _ratio(
            _get(report, "sale", "accepted_per_s"),
            _get(report, "limits", "redis_gate_pipelined_per_s"),
        ),
        "consumer_vs_old_kafka_claim": _ratio(consumer, OLD_KAFKA_3_PARTITIONS_PER_S),
    }


def _fmt(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}{unit}"
    return str(value)


def cpu_per_press(
    ms: dict[str, float | None] | None, names: tuple[str, ...], digits: int = 3
) -> str:
    """CPU ms per press of each process group, "a / b / broker"; a broker this run did not start
    is named as not measured, not given a number."""
    ms = ms or {}

    def one(name: str) -> str:
        value = ms.get(name)
        if value is None:
            return EXTERNAL_BROKER if name == BROKER else "-"
        return f"{value:.{digits}f}"

    return " / ".join(one(n) for n in names)


def _latency(d: dict[str, float] | None) -> str:
    if not d:
        return "-"
    return " / ".join(f"{d[k]:.1f}" for k in ("p50", "p95", "p99", "max") if k in d)


def rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, target or note) lines of the table."""

    def g(*path: str) -> Any:
        return _get(report, *path)

    r = report.get("ratios", {})
    out: list[tuple[str, str, str]] = []
    if g("sale"):
        answers = g("sale", "answers") or {}
        rejects = ", ".join(
            f"{k} {v:,}" for k, v in sorted(answers.items()) if k not in ("ACCEPTED", "UNCONFIRMED")
        )
        cpu = g("sale", "cpu_share") or {}
        out += [
            ("API accepted req/s", _fmt(g("sale", "accepted_per_s")), "target >= 3,000"),
            ("API answered req/s (all)", _fmt(g("sale", "answered_per_s")), ""),
            ("API latency ms p50/p95/p99/max", _latency(g("sale", "latency_ms")), "p99 < 50"),
            ("  accepted only", _latency(g("sale", "accepted_latency_ms")), ""),
            ("rejects by reason", rejects or "none", ""),
            ("end-to-end ms p50/p95/p99/max", _latency(g("sale", "end_to_end_ms")), "press -> row"),
            ("sale: consumer rows/s", _fmt(g("sale", "consumer_processed_per_s")), "arrival-bound"),
            (
                "drain after last answer",
                _fmt(g("sale", "drain_after_last_answer_s"), " s", 2),
                "target <= 15 s",
            ),
            (
                "correct (issued=min(stock,users), ...)",
                _fmt(g("sale", "correctness", "ok")),
                f"issued {g('sale', 'correctness', 'issued')} / expected "
                + _expected(g("sale", "correctness") or {})
                + _unconfirmed_note(g("sale", "correctness") or {}),
            ),
            (
                "CPU share gen/api/consumers",
                " / ".join(
                    f"{cpu.get(k, 0) * 100:.0f}%" for k in ("generators", "api", "consumers")
                ),
                "of all cores, during the load",
            ),
            (
                "idle CPU ms/s " + "/".join(COMPONENTS),
                cpu_per_press(g("sale", "idle_cpu_ms_per_s"), COMPONENTS, 0),
                "stack up, consumers polling, no presses",
            ),
        ]
    out += whole_system_rows(report)
    if g("drain"):
        out += [
            (
                f"consumer issues/s ({g('drain', 'consumers')} consumers)",
                _fmt(g("drain", "issues_per_s")),
                "target >= 10,000",
            ),
            (
                f"drain of {g('drain', 'backlog'):,} backlog",
                _fmt(g("drain", "drain_s_from_start"), " s", 2),
                "incl. process start + group join",
            ),
        ]
    if g("baseline"):
        out.append(
            ("one-by-one consumer issues/s", _fmt(g("baseline", "issues_per_s")), "naive design")
        )
    if g("limits"):
        out += [
            (
                "limit: PG batched insert rows/s",
                _fmt(g("limits", "postgres_insert_rows_per_s")),
                "",
            ),
            (
                "limit: Redis gate calls/s",
                _fmt(g("limits", "redis_gate_pipelined_per_s")),
                "pipelined",
            ),
            ("  via RedisGate, 1 process", _fmt(g("limits", "redis_gate_one_process_per_s")), ""),
        ]
    if g("drain", "broker_produce_per_s"):
        out.append(
            ("limit: broker produce msg/s", _fmt(g("drain", "broker_produce_per_s")), "acks=all")
        )
    if r.get("consumer_vs_one_by_one"):
        out.append(("ratio: consumer / one-by-one", _fmt(r["consumer_vs_one_by_one"], "x", 1), ""))
    if r.get("consumer_vs_postgres_insert"):
        out.append(
            (
                "ratio: consumer / PG insert",
                _fmt(r["consumer_vs_postgres_insert"] * 100, "%"),
                "target >= 50%",
            )
        )
    if r.get("api_accepted_vs_redis_gate"):
        out.append(
            ("ratio: API / Redis gate", _fmt(r["api_accepted_vs_redis_gate"] * 100, "%"), "")
        )
    out += api_rows(report.get("api") or {})
    return out


_COMPONENT_NOTES = {
    "api": "uvicorn workers (gate + publish)",
    "consumers": "issue batches",
    BROKER: "Kafka JVM",
    POSTGRES: "postmaster + backends, live and reaped",
    REDIS: "redis-server",
    LAG_EXPORTER: "exporter + reconciler",
    AUTOSCALER: "local autoscaler's reads",
    "sum": "the whole system",
}


def _runs(variant: dict[str, Any]) -> str:
    """Each sale of a variant in the order run: how far apart they are on a noisy machine."""
    return ", ".join(
        f"{r['sum_ms']:.2f}@{r['issued_per_s']:,.0f}" for r in variant.get("per_run", [])
    )


def _ms(value: float | None, name: str) -> str:
    if value is None:
        return EXTERNAL_BROKER if name == BROKER else NOT_MEASURED
    return f"{value:.4f}"


def whole_system_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """CPU ms per issued coupon by component, from the load's start until the last accepted
    press is issued: the current code, and against the baseline when one ran."""
    whole = report.get("whole_system") or {}
    cur = whole.get("current")
    if not cur:
        return []
    base = whole.get("baseline")
    ratio = whole.get("after_vs_before") or {}
    ref = whole.get("baseline_ref")
    out: list[tuple[str, str, str]] = []
    for name in (*COMPONENTS, "sum"):
        note = _COMPONENT_NOTES[name]
        if base:
            b = base["cpu_ms_per_issued_coupon"].get(name)
            note = f"before ({ref}) {_ms(b, name)}, now/before {_fmt(ratio.get(name), 'x', 2)}"
        value = _ms(cur["cpu_ms_per_issued_coupon"].get(name), name)
        out.append((f"CPU ms per issued coupon: {name}", value, note))
        if name == BROKER and cur.get("broker_jit_ms") is not None:
            out.append(_jit_row(cur, base))
    if cur.get("sum_jit_aside_ms") is not None:
        out.append(_jit_aside_row(cur, base, ratio))
    outside = f"{cur['outside_api_ms']:.4f}"
    issued = _fmt(cur["issued_per_s"])
    if base:
        out += [
            (
                "CPU ms per issued coupon outside the API",
                outside,
                f"before {base['outside_api_ms']:.4f},"
                f" now/before {_fmt(ratio.get('outside_api'), 'x', 2)}",
            ),
            (
                "coupons issued/s, load + drain",
                issued,
                f"before {_fmt(base['issued_per_s'])},"
                f" now/before {_fmt(ratio.get('issued_per_s'), 'x', 2)}",
            ),
            (
                "end-to-end ms p50 / p99 (sale runs' mean)",
                _e2e(cur),
                f"before {_e2e(base)}",
            ),
            ("each sale: CPU ms per coupon @ issued/s", _runs(cur), f"before {_runs(base)}"),
        ]
        if whole.get("current_env"):
            out.append(("current code's sale settings", str(whole["current_env"]), "env"))
    else:
        out += [
            ("CPU ms per issued coupon outside the API", outside, ""),
            ("coupons issued/s, load + drain", issued, "load's start to last row"),
        ]
    if whole.get("warmup_broker_jit_ms"):
        out.append(_warmup_row(whole["warmup_broker_jit_ms"]))
    if whole.get("baseline_note"):
        out.append(("sale before", "-", str(whole["baseline_note"])))
    return out


def _jit_row(cur: dict[str, Any], base: dict[str, Any] | None) -> tuple[str, str, str]:
    """The broker's share that its JIT compiler spent (a long-running broker pays it once)."""
    note = "the JVM's compiler threads, in the broker's share"
    if base and base.get("broker_jit_ms") is not None:
        note = f"before {base['broker_jit_ms']:.4f}"
    return ("  of which the broker's JIT compiler", f"{cur['broker_jit_ms']:.4f}", note)


def _jit_aside_row(
    cur: dict[str, Any], base: dict[str, Any] | None, ratio: dict[str, Any]
) -> tuple[str, str, str]:
    """The sum without the broker's compiling: what a broker that compiled long ago costs."""
    note = "a long-running broker compiled long ago"
    if base and base.get("sum_jit_aside_ms") is not None:
        note = (
            f"before {base['sum_jit_aside_ms']:.4f},"
            f" now/before {_fmt(ratio.get('sum_jit_aside'), 'x', 2)}"
        )
    return ("  sum, the broker's JIT aside", f"{cur['sum_jit_aside_ms']:.4f}", note)


def _warmup_row(jits: list[float | None]) -> tuple[str, str, str]:
    """The unrecorded warm-up sales, each with its broker's JIT CPU per issued coupon."""
    each = ", ".join("?" if j is None else f"{j:.4f}" for j in jits)
    return (
        "warm-up sales (unrecorded)",
        str(len(jits)),
        f"broker JIT ms per coupon: {each}; warm below {JIT_SETTLED_MS}",
    )


def _e2e(variant: dict[str, Any]) -> str:
    e2e = variant.get("end_to_end_ms") or {}
    return " / ".join(_fmt(e2e.get(k), "", 1) for k in ("p50", "p99"))


def api_rows(api: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The wrk phases: the ceiling, press / status / burst per variant, after vs before."""
    if not api:
        return []
    if "skipped" in api:
        return [("API limit phases (wrk)", "skipped", str(api["skipped"]))]
    ceiling = api["ceiling"]
    conns, burst = api["connections"], api["burst_connections"]
    out = [
        (
            f"ceiling: bare ASGI 202, {conns} conns",
            f"{_fmt(ceiling['per_s'])}/s",
            f"{ceiling['cpu_ms_per']:.3f} ms CPU/req, same uvicorn stack",
        )
    ]
    for name in ("current", "baseline"):
        v = api.get(name)
        if not v:
            continue
        label = name if name == "current" else f"before ({api['baseline_ref']})"
        press, status, surge = v["press"], v["status"], v["burst"]
        out += [
            (
                f"{label}: presses/s, {conns} conns",
                _fmt(press["per_s"]),
                f"p99 {press['p99_ms']:.1f} ms, {press['cpu_ms_per']:.3f} ms CPU/press"
                f" (target <= 0.12), {100 * (v['press_vs_ceiling'] or 0):.0f}% of ceiling",
            ),
            (
                f"{label}: CPU ms per press api/consumer/broker",
                cpu_per_press(press.get("cpu_ms_per_process"), ("api", "consumer", BROKER)),
                f"{conns} conns, during each wrk run",
            ),
            (
                f"{label}: status reads/s, {conns} conns",
                _fmt(status["per_s"]),
                f"p99 {status['p99_ms']:.1f} ms (target < 20 at >= 10,000/s),"
                f" {status['cpu_ms_per']:.3f} ms CPU/read",
            ),
            (
                f"{label}: presses/s, {burst} conns",
                _fmt(surge["per_s"]),
                f"p99 {surge['p99_ms']:.1f} ms, {surge['5xx']} 5xx,"
                f" {100 * (v['burst_vs_press'] or 0):.0f}% of {conns}-conn rate (target >= 90%)",
            ),
            (
                f"{label}: {burst} conns, wait p50 / p99 ms",
                f"{surge.get('p50_ms', 0):.0f} / {surge['p99_ms']:.0f}",
                f"inside the API p99 <= {_bound(surge.get('in_app_p99_ms_le'))} ms (its histogram);"
                " the rest waits outside it (socket queues, the loop's turn, wrk)",
            ),
            (
                f"{label}: every 202 has its row",
                _fmt(v["outcomes"]["ok"]),
                _rows_note(v["outcomes"]),
            ),
        ]
    if api.get("baseline_note"):
        out.append(("before", "-", str(api["baseline_note"])))
    if api.get("api_workers", 1) != 1:
        out.append(("API workers, wrk phases", str(api["api_workers"]), "--api-workers"))
    if api.get("current_env"):
        out.append(("current code's API settings", str(api["current_env"]), "env"))
    ratio = api.get("after_vs_before") or {}
    for key, label in (
        ("press_cpu_ms", "after/before: CPU per press"),
        ("press_per_s", "after/before: presses/s"),
        ("status_cpu_ms", "after/before: CPU per status read"),
        ("status_per_s", "after/before: status reads/s"),
        ("burst_per_s", f"after/before: presses/s at {burst} conns"),
    ):
        if ratio.get(key):
            out.append((label, _fmt(ratio[key], "x", 2), "same run, interleaved rounds"))
    return out


def _expected(correctness: dict[str, Any]) -> str:
    most, least = correctness.get("expected_issued"), correctness.get("expected_issued_least")
    return f"{least}-{most}" if least is not None and least != most else f"{most}"


def _unconfirmed_note(correctness: dict[str, Any]) -> str:
    """The 202s whose publish was not acknowledged in time, and how many of them never landed
    (their outcome is the reconciler's FAILED): none, most of the time."""
    unconfirmed = correctness.get("unconfirmed") or 0
    if not unconfirmed:
        return ""
    failed = correctness.get("unconfirmed_failed") or 0
    return (
        f"; {unconfirmed:,} 202s unconfirmed (publish not acked in time), {failed:,} settled FAILED"
    )


def _rows_note(outcomes: dict[str, Any]) -> str:
    """The 202s against the rows; rows still missing when the rows stopped coming are said to be
    so (no new row for the drain timeout), rather than counted as in flight; and how long the
    backlog wrk left took to drain."""
    accepted, rows = outcomes["accepted"], outcomes["rows"]
    counts = f"{accepted:,} 202s, {rows:,} rows"
    if rows < accepted:
        waited = outcomes.get("drain_timeout_s")
        stalled = f" (no new row for {waited:g} s)" if waited else ""
        return f"{counts}: {accepted - rows:,} not issued{stalled}"
    note = f"{counts} ({rows - accepted} in flight at wrk's deadline)"
    backlog = outcomes.get("backlog_at_end") or 0
    if backlog:
        note += (
            f"; {backlog:,} not yet issued when wrk stopped, drained in {outcomes['drain_s']:g} s"
        )
    return note


def _flushed(servers: list[str] | None) -> str:
    """The servers the bench started, all flushing to disk (fsync) as a deployment's do."""
    return f"; {' and '.join(servers)} started with fsync on" if servers else ""


def _bound(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:g}"


def print_table(report: dict[str, Any], console: Console | None = None) -> None:
    machine = report.get("machine", {})
    table = Table(
        title=f"coupon-issuer bench ({machine.get('cores')} cores, load avg before "
        f"{machine.get('load_before')}{_flushed(machine.get('flushed_servers'))})",
        title_justify="left",
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target / note")
    for measure, value, note in rows(report):
        table.add_row(measure, value, note)
    (console or Console(width=max(110, Console().width))).print(table)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def _rate(series: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    ts, rates = [], []
    for a, b in itertools.pairwise(series):
        dt = b["t"] - a["t"]
        if dt > 0:
            ts.append(b["t"])
            rates.append((b[key] - a[key]) / dt)
    return ts, rates


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Lag, issues/s and consumer replicas over time, for the flash sale and the drain phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [
        (name, report[key]["timeseries"])
        for key, name in (("sale", "flash sale through the API"), ("drain", "backlog drain"))
        if report.get(key) and report[key].get("timeseries")
    ]
    if not phases:
        return
    fig, axes = plt.subplots(
        3, len(phases), figsize=(6 * len(phases), 8), sharex="col", squeeze=False
    )
    for col, (name, series) in enumerate(phases):
        t = [s["t"] for s in series]
        lag_ax, rate_ax, rep_ax = axes[0][col], axes[1][col], axes[2][col]
        lag_ax.plot(t, [s["lag"] if s["lag"] is not None else float("nan") for s in series])
        lag_ax.set_title(name)
        lag_ax.set_ylabel("consumer lag (msgs)")
        ts, processed = _rate(series, "processed")
        rate_ax.plot(ts, processed, label="processed/s (consumers)")
        if any(s["accepted"] for s in series):
            ta, accepted = _rate(series, "accepted")
            rate_ax.plot(ta, accepted, label="accepted/s (API)")
        rate_ax.set_ylabel("per second")
        rate_ax.legend(loc="upper right", fontsize="small")
        rep_ax.step(t, [s["replicas"] for s in series], where="post")
        rep_ax.set_ylabel("consumer replicas")
        rep_ax.set_xlabel("seconds")
        rep_ax.set_ylim(bottom=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
