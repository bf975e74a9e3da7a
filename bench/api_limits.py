"""The API against its limit, with wrk, in one run: a bare-ASGI ceiling on the same server stack,
presses (64 connections), status reads, and a burst (512 connections); CPU per answer from the API
process's own counters; optionally the same phases against an earlier revision of the code (the
"before"), interleaved round by round with the current code so both meet the same machine load.

Every accepted press must end as a row: after the rounds the bench waits until each variant's
database holds exactly as many requests as wrk counted 202 answers, and reports it.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from app.config import Settings
from app.local.processes import ManagedProcess, free_port
from app.local.stack import prepare
from bench import db, server_latency, wrk
from bench.cpu import BROKER, CpuMeter, ms_per
from bench.flash_sale import create_coupon
from bench.phases import RunContext
from harness import ServiceProcesses, wait_until

PRESS_CONNECTIONS = 64
BURST_CONNECTIONS = 512
_STOCK = 10_000_000  # never sold out: every press of a new user is accepted
_ROWS_POLL_S = 1.0  # a count over the whole table: not more often than this


@dataclass
class Variant:
    """One deployment under test: the current code, or an earlier revision ("baseline")."""

    name: str
    settings: Settings
    procs: ServiceProcesses
    coupon_url: str = ""
    accepted: int = 0  # 202 answers wrk counted, over every round
    cut_off: int = 0  # presses wrk may have sent but not waited for (one per connection and run)
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def api_pids(self) -> list[int]:
        return [self.procs.api.popen.pid] if self.procs.api else []  # metered with its tree

    def groups(self, broker: list[int] | None) -> dict[str, list[int]]:
        """What one wrk run meters: the API, the variant's consumer and, if ours, the broker."""
        out = {"api": self.api_pids(), "consumer": [p.popen.pid for p in self.procs.consumers]}
        return {**out, BROKER: broker} if broker is not None else out


def _measure(groups: dict[str, list[int]], run: Any) -> tuple[wrk.WrkResult, dict[str, float]]:
    """Run ``run()`` (a wrk run) and the CPU seconds each group used meanwhile."""
    meter = CpuMeter(groups)
    meter.start()
    result = run()
    meter.stop()
    return result, meter.used


def _record(
    variant: Variant, phase: str, result: wrk.WrkResult, cpu: dict[str, float], counted: int
) -> None:
    row = {
        **result.as_dict(),
        "cpu_s": cpu["api"],
        "cpu_ms_per": 1000 * cpu["api"] / max(1, counted),
        # the API's, the consumer's and the broker's (when ours) during the run
        "cpu_ms_per_process": ms_per(cpu, counted),
    }
    variant.runs.setdefault(phase, []).append(row)


def baseline_tree(ref: str, into: Path) -> Path | None:
    """The ``app`` package of revision ``ref``, extracted into ``into``; None if git lacks it.

    Packages the baseline did not depend on (by its requirements.lock) are made unimportable in
    its processes (a sitecustomize), so a library added since, such as a C parser a client picks
    up when present, counts on the side of the change that added it.
    """
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", ref, "app", "requirements.lock"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        return None
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    added = _packages(root / "requirements.lock") - _packages(into / "requirements.lock")
    modules = sorted(name.replace("-", "_") for name in added)
    (into / "sitecustomize.py").write_text(
        "import sys\n"
        f"for _name in {modules!r}:\n"
        "    sys.modules[_name] = None  # not a dependency of this revision\n"
    )
    return into


async def baseline_env(ref: str, into: Path) -> tuple[dict[str, str] | None, str | None]:
    """The environment that runs revision ``ref``'s ``app`` (extracted into ``into``), or None
    and why not."""
    tree = await asyncio.to_thread(baseline_tree, ref, into)
    if tree is None:
        return None, f"revision {ref!r} is not in this clone"
    return {"PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"}, None


def _packages(lock: Path) -> set[str]:
    names = set()
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==", line.strip())
        if match:
            names.add(match.group(1).lower().replace("_", "-"))
    return names


async def _start_variant(ctx: RunContext, name: str, env: dict[str, str]) -> Variant:
    settings = ctx.isolated(f"api_{name}", api_workers=ctx.opts.api_workers)
    await asyncio.to_thread(prepare, settings)
    procs = ctx.processes(settings, revision=name == "baseline")
    procs.process_env.update(env)
    variant = Variant(name, settings, procs)
    procs.start_api()
    procs.add_consumer()  # one coupon is one partition: one consumer serves it
    await procs.wait_api_ready()
    await procs.wait_for_assignment()
    async with aiohttp.ClientSession() as http:
        coupon_id = await create_coupon(settings, _STOCK, http)
    variant.coupon_url = f"{procs.base_url}/api/coupons/{coupon_id}"
    return variant


def _start_ceiling(log_dir: Path) -> tuple[ManagedProcess, int]:
    port = free_port()
    log = (log_dir / "ceiling.log").open("ab")
    popen = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.ceiling_app:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return ManagedProcess("ceiling", popen), port


async def _wait_port(port: int) -> None:
    async def answers() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    await wait_until(answers, 30, "the ceiling server to listen")


async def api_limits(ctx: RunContext) -> dict[str, Any]:
    """Interleaved rounds of ceiling / press / status / burst, current code vs baseline."""
    opts = ctx.opts
    seconds = opts.api_seconds
    scripts = Path(tempfile.mkdtemp(prefix="coupon-wrk-", dir=ctx.log_dir))
    variants: list[Variant] = []
    ceiling: ManagedProcess | None = None
    baseline_note = None
    try:
        ctx.bar.phase("api: start", 1)
        variants.append(await _start_variant(ctx, "current", dict(opts.api_env)))
        if opts.baseline_ref:
            env, baseline_note = await baseline_env(opts.baseline_ref, ctx.log_dir / "baseline-src")
            if env is not None:
                variants.append(await _start_variant(ctx, "baseline", env))
        ceiling, port = _start_ceiling(ctx.log_dir)
        await _wait_port(port)
        ceiling_pids = [ceiling.popen.pid]
        ceiling_runs: list[dict[str, Any]] = []
        steps = opts.api_rounds * (1 + 3 * len(variants))
        ctx.bar.phase(f"api: {opts.api_rounds} rounds x {seconds:.0f} s", steps)
        done = 0
        for round_no in range(opts.api_rounds):
            result, cpu = await asyncio.to_thread(
                _measure,
                {"ceiling": ceiling_pids},
                lambda: wrk.run(
                    f"http://127.0.0.1:{port}/ceiling",
                    "constant",
                    connections=PRESS_CONNECTIONS,
                    seconds=seconds,
                    script_dir=scripts,
                ),
            )
            ceiling_runs.append(
                {
                    **result.as_dict(),
                    "cpu_s": cpu["ceiling"],
                    "cpu_ms_per": 1000 * cpu["ceiling"] / max(1, result.requests),
                }
            )
            done += 1
            ctx.bar.update(done, f"ceiling {result.per_second:,.0f}/s")
            # alternate who goes first, so neither always meets the other's leftovers
            order = variants if round_no % 2 == 0 else variants[::-1]
            for phase, connections in (
                ("press", PRESS_CONNECTIONS),
                ("status", PRESS_CONNECTIONS),
                ("burst", BURST_CONNECTIONS),
            ):
                for v in order:
                    await asyncio.to_thread(
                        _run_phase, v, phase, connections, seconds, scripts, round_no, ctx
                    )
                    done += 1
                    last = v.runs[phase][-1]
                    ctx.bar.update(done, f"{v.name} {phase} {last['per_s']:,.0f}/s")
        ctx.bar.phase("api: every 202 has its row", sum(v.accepted for v in variants))
        rows: dict[str, dict[str, Any]] = {}
        for v in variants:  # one after the other; the bar counts the rows of all
            counted = sum(r["rows"] for r in rows.values())

            def shown(n: int, counted: int = counted, name: str = v.name) -> None:
                ctx.bar.update(counted + n, name)

            rows[v.name] = await _wait_rows(v, opts.drain_timeout_s, shown)
        summary = _summary(variants, ceiling_runs, rows, seconds, opts.baseline_ref, baseline_note)
        return {**summary, "api_workers": opts.api_workers, "current_env": dict(opts.api_env)}
    finally:
        if ceiling is not None:
            ceiling.stop()
        for v in variants:
            await asyncio.to_thread(v.procs.terminate)


def _run_phase(
    v: Variant,
    phase: str,
    connections: int,
    seconds: float,
    scripts: Path,
    round_no: int,
    ctx: RunContext,
) -> None:
    press_users = f"r{round_no}p"
    groups = v.groups(ctx.broker_pids)
    if phase == "status":
        readable = max(1, int(0.9 * v.runs["press"][-1]["thread_accepted"]))
        result, cpu = _measure(
            groups,
            lambda: wrk.run(
                v.coupon_url,
                "status",
                connections=connections,
                seconds=seconds,
                script_dir=scripts,
                user_prefix=press_users,
                readable=readable,
            ),
        )
        _record(v, phase, result, cpu, result.count(200))
        return
    users = press_users if phase == "press" else f"r{round_no}b"
    before = server_latency.scrape(v.procs.base_url)
    result, cpu = _measure(
        groups,
        lambda: wrk.run(
            f"{v.coupon_url}/issue/queue",
            "press",
            connections=connections,
            seconds=seconds,
            script_dir=scripts,
            user_prefix=users,
        ),
    )
    # inside the API against wrk's whole wait: which side of the socket the tail is on
    in_app = server_latency.summary(before, server_latency.scrape(v.procs.base_url))
    accepted = result.count(202)
    v.accepted += accepted
    v.cut_off += connections
    _record(v, phase, result, cpu, accepted)
    v.runs[phase][-1].update(in_app)
    v.runs[phase][-1]["thread_accepted"] = result.thread_codes[0].get(202, 0)


async def _wait_rows(
    v: Variant, stall_s: float, shown: Callable[[int], None] = lambda rows: None
) -> dict[str, Any]:
    """Wait until the variant's database holds a request row for every 202 wrk counted, for as
    long as rows keep coming: it gives up only when none came for ``stall_s``. A drain that moves
    is slow, not short (one consumer on a shared box drains behind a fast API); one that stopped
    short of the 202s lost presses.

    wrk stops at its deadline without reading the answers still in flight: those presses were
    admitted too, so the rows may exceed the 202s by at most one per connection and run, never
    fall short of them."""
    conn = await db.connect(v.settings.database_url, v.settings.db_schema)
    try:
        started = time.monotonic()
        rows = first = await db.processed_count(conn)
        moved = started
        while rows < v.accepted and time.monotonic() - moved < stall_s:
            await asyncio.sleep(_ROWS_POLL_S)
            now = await db.processed_count(conn)
            if now > rows:
                moved = time.monotonic()
            rows = now
            shown(rows)
        return {
            "accepted": v.accepted,
            "rows": rows,
            "in_flight_at_deadline": rows - v.accepted,
            "backlog_at_end": max(0, v.accepted - first),  # not yet issued when wrk stopped
            "drain_s": round(moved - started, 1),
            "drain_timeout_s": stall_s,
            "ok": v.accepted <= rows <= v.accepted + v.cut_off,
        }
    finally:
        await conn.close()


def _mean(runs: list[dict[str, Any]], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs) if runs else 0.0


def _phase_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    codes: dict[str, int] = {}
    for r in runs:
        for k, n in r["codes"].items():
            codes[k] = codes.get(k, 0) + n
    per_process = [r["cpu_ms_per_process"] for r in runs if "cpu_ms_per_process" in r]
    return {
        "per_s": _mean(runs, "per_s"),
        "p99_ms": max((r["p99_ms"] for r in runs), default=0.0),
        "p50_ms": _mean(runs, "p50_ms"),
        # inside the API (its histogram, a bucket bound), against wrk's p99 above
        "in_app_p99_ms_le": max(
            (r["in_app_p99_ms_le"] for r in runs if r.get("in_app_p99_ms_le") is not None),
            default=None,
        ),
        "cpu_ms_per": _mean(runs, "cpu_ms_per"),
        "cpu_ms_per_process": {k: _mean(per_process, k) for k in (per_process or [{}])[0]},
        "codes": codes,
        "5xx": sum(n for k, n in codes.items() if k.startswith("5")),
        "socket_errors": sum(r["socket_errors"] for r in runs),
        "rounds": runs,
    }


def _summary(
    variants: list[Variant],
    ceiling_runs: list[dict[str, Any]],
    rows: dict[str, dict[str, Any]],
    seconds: float,
    baseline_ref: str | None,
    baseline_note: str | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seconds_per_run": seconds,
        "connections": PRESS_CONNECTIONS,
        "burst_connections": BURST_CONNECTIONS,
        "ceiling": _phase_summary(ceiling_runs),
        "baseline_ref": baseline_ref,
        "baseline_note": baseline_note,
    }
    for v in variants:
        phases = {p: _phase_summary(runs) for p, runs in v.runs.items()}
        press_rate = phases["press"]["per_s"]
        out[v.name] = {
            **phases,
            "outcomes": rows[v.name],
            "burst_vs_press": phases["burst"]["per_s"] / press_rate if press_rate else None,
            "press_vs_ceiling": press_rate / out["ceiling"]["per_s"]
            if out["ceiling"]["per_s"]
            else None,
        }
    if "baseline" in out:
        cur, base = out["current"], out["baseline"]
        out["after_vs_before"] = {
            "press_per_s": _div(cur["press"]["per_s"], base["press"]["per_s"]),
            "press_cpu_ms": _div(cur["press"]["cpu_ms_per"], base["press"]["cpu_ms_per"]),
            "status_per_s": _div(cur["status"]["per_s"], base["status"]["per_s"]),
            "status_cpu_ms": _div(cur["status"]["cpu_ms_per"], base["status"]["cpu_ms_per"]),
            "burst_per_s": _div(cur["burst"]["per_s"], base["burst"]["per_s"]),
        }
    return out


def _div(a: float, b: float) -> float | None:
    return a / b if b else None
