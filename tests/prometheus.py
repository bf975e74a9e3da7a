"""Prometheus test helpers: the expressions of the dashboards and alerts, promtool, a real server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import Counter, Gauge, Histogram

from app.local.processes import ManagedProcess, detach_and_die_with_parent, free_port, wait_for_port
from app.local.stack import child_env, spawn
from app.observability import metrics
from dashboards.pictures.grafana import Series, expand
from harness import ServiceProcesses, wait_until

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
ALERTS = DASHBOARDS / "alerts.yml"
_METRIC_NAME = re.compile(r"\bcoupon_[a-z0-9_]+\b")
# A comparison with a number: made a `bool` comparison, so the expression returns its series
# (0 or 1) whether or not the alert would fire. `!=` and `=~` in label matchers are followed by a
# quote, never by a digit, so they are left alone.
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)\s*(?=[-+]?(?:\d|Inf))")


def tool(name: str) -> str:
    """Path of a Prometheus binary (Debian's package, installed by `make system-deps`)."""
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
    )
    if found is None:
        raise AssertionError(f"{name} is not installed: run `make system-deps` (Debian prometheus)")
    return found


def serve(
    binary: str, workdir: Path, config: dict[str, Any], args: Callable[[int], list[str]]
) -> tuple[ManagedProcess, int]:
    """Start a Prometheus project's server (``binary``) on a free loopback port with ``config``
    (written to ``workdir/<binary>.yml``) and ``args(port)``, logging to ``workdir/<binary>.log``;
    wait for the port. It dies with the test process, as the stack's do."""
    config_file = workdir / f"{binary}.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / f"{binary}.log").open("wb")
    try:
        popen = subprocess.Popen(
            [tool(binary), f"--config.file={config_file}", *args(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=detach_and_die_with_parent,
        )
    finally:
        log.close()
    process = ManagedProcess(binary, popen)
    wait_for_port("127.0.0.1", port, 30, binary)
    return process, port


def promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> str:
    """Run promtool; fail the test with its output when it reports a problem."""
    done = subprocess.run(
        [tool("promtool"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def check_metrics(exposition: str) -> None:
    """`promtool check metrics` must be silent: no lint problem in a /metrics answer."""
    output = promtool("check", "metrics", stdin=exposition)
    assert not output.strip(), f"promtool check metrics:\n{output}"


# --- the expressions ----------------------------------------------------------------------------


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def dashboard_expressions(path: Path) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets and query variables."""
    board = json.loads(path.read_text())
    found = [n["expr"] for n in _walk(board.get("panels", [])) if isinstance(n.get("expr"), str)]
    for variable in board["templating"]["list"]:
        if variable.get("type") == "query":
            query = variable["query"]
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def alert_expressions() -> list[str]:
    return [str(rule["expr"]).strip() for rule in alert_rules()]


def all_expressions() -> list[tuple[str, str]]:
    """(where, expression) for every dashboard and alert expression."""
    found = [(p.name, e) for p in dashboard_files() for e in dashboard_expressions(p)]
    found += [(f"alerts.yml:{r['alert']}", str(r["expr"]).strip()) for r in alert_rules()]
    return found


def metric_names(expression: str) -> set[str]:
    """``coupon_*`` names in an expression, outside quoted label values."""
    return set(_METRIC_NAME.findall(re.sub(r'"[^"]*"', '""', expression)))


def exposed_names() -> set[str]:
    """Every sample name the service can expose (API, consumer and lag exporter)."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, Histogram):
            base = value._name
            names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
        elif isinstance(value, Counter):
            names.add(f"{value._name}_total")
        elif isinstance(value, Gauge):
            names.add(value._name)
        elif isinstance(value, metrics.FamilySpec):
            names.add(value.sample_name)
    return names


def for_prometheus(expression: str, variables: dict[str, str]) -> str:
    """What Grafana would send: variables replaced; ``label_values(s, l)`` as ``count by (l) (s)``."""
    return expand(expression, variables)


def as_bool_comparisons(expression: str) -> str:
    """An alert expression that returns its series whether or not the alert fires."""
    return _COMPARISON.sub(lambda m: f"{m.group(1)} bool ", expression)


# --- a real Prometheus --------------------------------------------------------------------------


@dataclass
class ScrapeJob:
    name: str
    targets: list[str]
    labels: dict[str, str] = field(default_factory=dict)  # on top of the server's labels


@dataclass
class PrometheusServer:
    """``/usr/bin/prometheus`` on a free loopback port, scraping every second; with
    ``rule_files`` it evaluates them every ``evaluation_interval`` and sends alerts to the
    ``alertmanagers`` (host:port) at once (resend delay 1 s)."""

    jobs: list[ScrapeJob]
    labels: dict[str, str]
    workdir: Path
    port: int = 0
    process: ManagedProcess | None = None
    rule_files: list[Path] = field(default_factory=list)
    alertmanagers: list[str] = field(default_factory=list)
    evaluation_interval: str = "1s"
    # scrape configs as Prometheus takes them, after the static jobs (say, Kubernetes discovery)
    scrape_configs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "900ms",
                "evaluation_interval": self.evaluation_interval,
            },
            "scrape_configs": [
                {
                    "job_name": job.name,
                    "static_configs": [
                        {"targets": job.targets, "labels": {**self.labels, **job.labels}}
                    ],
                }
                for job in self.jobs
            ]
            + self.scrape_configs,
            "rule_files": [str(path) for path in self.rule_files],
        }
        if self.alertmanagers:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": self.alertmanagers}]}]
            }
        self.process, self.port = serve(
            "prometheus",
            self.workdir,
            config,
            lambda port: [
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
                "--rules.alert.resend-delay=1s",
            ],
        )
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def query(self, expression: str) -> list[dict[str, Any]]:
        """Instant query; raises AssertionError with Prometheus' message when it does not parse."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=10)
        body = r.json()
        assert body.get("status") == "success", f"{expression!r}: {body.get('error', body)}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query_range(self, expression: str, start: float, end: float, step: float) -> list[Series]:
        """``/api/v1/query_range``, each series as a :class:`Series` (NaN for "NaN")."""
        r = httpx.get(
            f"{self.url}/api/v1/query_range",
            params={"query": expression, "start": start, "end": end, "step": step},
            timeout=30,
        )
        body = r.json()
        assert body.get("status") == "success", f"{expression!r}: {body.get('error', body)}"
        return [
            Series(
                dict(item["metric"]),
                [float(t) for t, _ in item["values"]],
                [float(v) for _, v in item["values"]],
            )
            for item in body["data"]["result"]
        ]

    def targets_up(self) -> dict[str, bool]:
        r = httpx.get(f"{self.url}/api/v1/targets", timeout=10)
        return {t["scrapeUrl"]: t["health"] == "up" for t in r.json()["data"]["activeTargets"]}


def new_workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def first_value(result: list[dict[str, Any]]) -> float:
    return float(result[0]["value"][1]) if result else float("nan")


# --- what Prometheus scrapes: a stack and its lag exporter --------------------------------------


@contextlib.contextmanager
def running_lag_exporter(
    stack: ServiceProcesses, env: dict[str, str] | None = None
) -> Iterator[int]:
    """``coupon-issuer lag-exporter`` (and its reconciler) for ``stack``'s settings on a free
    port (yielded); it must stop cleanly on SIGTERM."""
    port = free_port()
    exporter = spawn(
        "lag-exporter",
        ["lag-exporter"],
        child_env(stack.settings, {**(env or {}), "COUPON_LAG_EXPORTER_PORT": str(port)}),
        stack.log_dir / "lag-exporter.log",
    )
    try:
        yield port
    finally:
        assert exporter.stop() == 0, "the lag exporter did not stop cleanly on SIGTERM"


def stack_jobs(
    stack: ServiceProcesses,
    exporter_port: int | None,
    prefix: str = "coupon",
    labels: dict[str, str] | None = None,
) -> list[ScrapeJob]:
    """Scrape jobs for the API, the consumers started so far and the lag exporter if it runs
    (each series with ``labels``, say the namespace a deployment would have)."""
    extra = labels or {}
    jobs = [ScrapeJob(f"{prefix}-api", [f"127.0.0.1:{stack.settings.api_port}"], extra)]
    if exporter_port is not None:
        jobs.append(ScrapeJob(f"{prefix}-lag-exporter", [f"127.0.0.1:{exporter_port}"], extra))
    if stack.consumer_ports:
        consumers = [f"127.0.0.1:{p}" for p in stack.consumer_ports]
        jobs.append(ScrapeJob(f"{prefix}-consumer", consumers, extra))
    return jobs


async def wait_scraping(server: PrometheusServer, timeout: float = 60) -> None:
    """Wait until Prometheus scraped every target of its jobs successfully."""
    targets = sum(len(job.targets) for job in server.jobs)

    async def all_up() -> bool:
        up = await asyncio.to_thread(server.targets_up)
        return len(up) == targets and all(up.values())

    await wait_until(all_up, timeout, "Prometheus to scrape every target", interval=0.5)
