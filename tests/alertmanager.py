"""Alert delivery test helpers: a real Alertmanager, the webhook it notifies, the alert rules
with their durations shortened for a test's wall clock, and a deployment that drives an alert
(produce its condition, wait for it firing, recover, wait for it resolved, each within a bound)."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from app.local.processes import ManagedProcess, free_port
from harness import wait_until
from tests.prometheus import ALERTS, serve
from tests.stack import Stack

_DURATION = re.compile(r"(\d+)([smhd])")
_RANGE = re.compile(r"\[(\d+[smhd])\]")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TEMPLATE = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_LABEL = re.compile(r"\{\{\s*\$labels\.(\w+)\s*\}\}")


def seconds(duration: str) -> float:
    """A Prometheus duration ("5m", "1h30m") in seconds."""
    return float(sum(int(n) * _SECONDS[unit] for n, unit in _DURATION.findall(duration)))


def _shortened(duration: str, speedup: int) -> str:
    return f"{max(1, round(seconds(duration) / speedup))}s"


def accelerated(rule: dict[str, Any], speedup: int) -> dict[str, Any]:
    """``rule`` with its ``for:`` and each range selector (``[5m]``) divided by ``speedup``
    (at least 1s); expression, thresholds, labels and annotations as they are."""
    faster = dict(rule)
    faster["expr"] = _RANGE.sub(lambda m: f"[{_shortened(m.group(1), speedup)}]", str(rule["expr"]))
    if "for" in rule:
        faster["for"] = _shortened(str(rule["for"]), speedup)
    return faster


def accelerated_rules(speedup: int, into: Path) -> Path:
    """dashboards/alerts.yml with every rule :func:`accelerated`, written to ``into``: a real
    Prometheus cannot run faster than the wall clock, and a 15-minute window takes 15 minutes
    to empty (promtool's unit tests check the shipped durations)."""
    document = yaml.safe_load(ALERTS.read_text())
    for group in document["groups"]:
        group["rules"] = [accelerated(rule, speedup) for rule in group["rules"]]
    path = into / "alerts.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def rule_windows(rule: dict[str, Any]) -> tuple[float, float]:
    """(longest range selector, ``for:``) of a rule, in seconds."""
    ranges = [seconds(r) for r in _RANGE.findall(str(rule["expr"]))]
    return max(ranges, default=0.0), seconds(str(rule.get("for", "0s")))


def rendered_summary(template: str, labels: dict[str, str]) -> str:
    """A summary template whose only variables are ``$labels.x``, as Prometheus renders it."""
    return _LABEL.sub(lambda m: labels.get(m.group(1), ""), template)


def matches_template(text: str, template: str) -> bool:
    """``text`` is ``template`` with each ``{{ ... }}`` filled in by something."""
    parts = [re.escape(p) for p in _TEMPLATE.split(template.strip())]
    return re.fullmatch(".+?".join(parts), text.strip(), re.DOTALL) is not None


@dataclass
class Notification:
    """One alert of one webhook call, and when it arrived (monotonic seconds)."""

    received: float
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]


@dataclass
class WebhookReceiver:
    """An HTTP endpoint on loopback recording what Alertmanager's webhook sends."""

    notifications: list[Notification] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/alerts", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        now = time.monotonic()
        for alert in body["alerts"]:
            self.notifications.append(
                Notification(now, alert["status"], alert["labels"], alert["annotations"])
            )
        return web.Response(status=200)

    def find(self, alertname: str, status: str, labels: dict[str, str]) -> Notification | None:
        """The first ``status`` notification of ``alertname`` whose labels include ``labels``."""
        for n in self.notifications:
            if (
                n.status == status
                and n.labels.get("alertname") == alertname
                and labels.items() <= n.labels.items()
            ):
                return n
        return None

    async def wait_for(
        self, alertname: str, status: str, labels: dict[str, str], timeout: float
    ) -> Notification:
        """Wait until Alertmanager delivered ``alertname`` as ``status`` (firing / resolved)."""
        return await wait_until(
            lambda: self.find(alertname, status, labels),
            timeout,
            f"{alertname} {status} {labels} at the webhook",
            interval=0.2,
        )


@dataclass
class AlertmanagerServer:
    """Debian's ``prometheus-alertmanager`` on a free loopback port (no cluster gossip), sending
    every alert on its own (grouped by all labels) to one webhook, resolved ones included."""

    webhook_url: str
    workdir: Path
    group_interval: str = "1s"
    port: int = 0
    process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> AlertmanagerServer:
        config = {
            "route": {
                "receiver": "test",
                "group_by": ["..."],
                "group_wait": "0s",
                "group_interval": self.group_interval,
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "test",
                    "webhook_configs": [{"url": self.webhook_url, "send_resolved": True}],
                }
            ],
        }
        self.process, self.port = serve(
            "prometheus-alertmanager",
            self.workdir,
            config,
            lambda port: [
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # a single instance: no gossip port
                "--log.level=warn",
            ],
        )
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()


# --- driving an alert: produce its condition, wait for it firing, recover, wait for it resolved --

# One scrape, one exporter poll, one rule evaluation and one Alertmanager flush (1 s each)
# between a condition and its notification; SLACK_S for a CPU shared with other work.
PIPELINE_S = 4.0
SLACK_S = 20.0
TICK_S = 0.2  # how often a condition is kept up and the webhook looked at


def firing_bound(rule: dict[str, Any]) -> float:
    """Latest a firing notification may arrive after its condition was produced."""
    window, hold = rule_windows(rule)
    return window + hold + PIPELINE_S + SLACK_S


def resolved_bound(rule: dict[str, Any]) -> float:
    """Latest a resolved notification may arrive after the condition ended."""
    window, _ = rule_windows(rule)
    return window + PIPELINE_S + SLACK_S


@dataclass
class Delivered:
    """An alert as the webhook received it, firing then resolved, the labels expected and how
    long each took (from producing the condition, from the recovery) against its bound."""

    alert: str
    expected: dict[str, str]
    firing: Notification
    resolved: Notification
    fired_after: float
    resolved_after: float
    fire_bound: float
    resolve_bound: float

    def __str__(self) -> str:
        return (
            f"{self.alert}: firing after {self.fired_after:.1f}s (bound {self.fire_bound:.0f}s),"
            f" resolved {self.resolved_after:.1f}s after the recovery"
            f" (bound {self.resolve_bound:.0f}s)"
        )

    def check(self, rule: dict[str, Any]) -> None:
        """The rule's labels and the expected ones; annotations rendered from the rule's."""
        firing = self.firing
        assert {**rule["labels"], **self.expected}.items() <= firing.labels.items(), firing
        summary = rule["annotations"]["summary"]
        assert firing.annotations["summary"] == rendered_summary(summary, firing.labels)
        description = rule["annotations"]["description"]
        assert matches_template(firing.annotations["description"], description), firing
        assert self.resolved.labels == firing.labels
        assert self.resolved.received >= firing.received
        print(self)  # the timings, for the run's log (pytest -s)


async def nothing() -> None:
    return None


@dataclass
class Deployment:
    """A stack whose metrics carry ``namespace``, the webhook, and the rules Prometheus runs."""

    namespace: str
    stack: Stack
    receiver: WebhookReceiver
    rules: dict[str, dict[str, Any]]

    async def delivered(
        self, alert: str, status: str, since: float, bound: float, labels: dict[str, str]
    ) -> Notification:
        """The notification, which must arrive within ``bound`` s of ``since`` (monotonic)."""
        wanted = {"namespace": self.namespace, **labels}
        remaining = max(0.0, since + bound - time.monotonic())
        found = await self.receiver.wait_for(alert, status, wanted, remaining)
        late = found.received - since
        assert late <= bound, f"{alert} {status} after {late:.1f}s, above its bound {bound:.1f}s"
        return found

    async def drive(
        self,
        alerts: dict[str, dict[str, str]],
        produce: Callable[[], Awaitable[None]],
        recover: Callable[[], Awaitable[None]],
        keep_up: Callable[[], Awaitable[None]] = nothing,
        recovery_s: float = 0.0,
    ) -> list[Delivered]:
        """``produce`` the condition and ``keep_up`` it every TICK_S until every alert of
        ``alerts`` (name -> labels expected) was delivered firing; then ``recover`` and wait for
        each resolved. ``recovery_s``: how long the stack itself may take to show the recovery."""
        started = time.monotonic()
        await produce()

        async def all_firing() -> bool:
            await keep_up()
            return all(
                self.receiver.find(a, "firing", {"namespace": self.namespace, **labels})
                for a, labels in alerts.items()
            )

        bound = max(firing_bound(self.rules[a]) for a in alerts)
        await wait_until(all_firing, bound, f"{', '.join(alerts)} firing", TICK_S)
        firing = {
            a: await self.delivered(a, "firing", started, firing_bound(self.rules[a]), labels)
            for a, labels in alerts.items()
        }
        await recover()
        ended = time.monotonic()
        delivered = []
        for a, labels in alerts.items():
            fire_bound = firing_bound(self.rules[a])
            resolve_bound = resolved_bound(self.rules[a]) + recovery_s
            resolved = await self.delivered(a, "resolved", ended, resolve_bound, labels)
            fired_after, resolved_after = firing[a].received - started, resolved.received - ended
            delivered.append(
                Delivered(
                    a,
                    labels,
                    firing[a],
                    resolved,
                    fired_after,
                    resolved_after,
                    fire_bound,
                    resolve_bound,
                )
            )
        return delivered
