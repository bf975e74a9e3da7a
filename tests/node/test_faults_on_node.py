"""Faults on the node, mid-sale: a consumer pod deleted (graceful stop), a consumer container
SIGKILLed (the kubelet restarts it), an API pod deleted behind its Service (two replicas, the
chart's preStop sleep), ``helm upgrade`` to a new image tag (a rolling update of the API and
the consumers), and the node drained (its evictions held by the chart's PodDisruptionBudgets).
Every accepted press is issued exactly once, and `verify` is clean."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from harness import wait_until
from harness.node import NODE_NAME, Node
from tests.images.podman import TARGETS
from tests.node.conftest import PodServers, app_image
from tests.node.release import NAME, Release, installed
from tests.stack import coupons_on_every_partition

pytestmark = [pytest.mark.node, pytest.mark.asyncio(loop_scope="session")]

PARTITIONS = 3
CONSUMERS = 2
# Presses that may fail while an API pod leaves: none should (the other replica serves, and the
# leaving one sleeps in preStop until kube-proxy has dropped it); a connection caught at the
# moment the endpoint goes is allowed, at most this share of all presses.
ERROR_BOUND = 0.01
MAX_USERS = 20_000  # rounds of the sale (a press per coupon each) at most, if the faults hang
# A rolling update of both Deployments (maxUnavailable 0 for the API, the old pod's preStop sleep
# outlasting kube-proxy's endpoint removal): no press may be answered 5xx. What may fail is a
# press on a kept-alive connection the old pod closes as it exits after its preStop (the Service's
# conntrack entry still leads there): at most one per pooled connection per replaced API pod.
UPGRADE_TRANSPORT_ERRORS = 2 * 10  # API replicas x the sale's concurrency
PRE_STOP = 5  # the chart's api.preStopSleepSeconds
# How long `kubectl drain` keeps asking for the evictions the budgets refuse.
DRAIN_TIMEOUT = 20


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def release(
    node: Node, pod_servers: PodServers, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Release]:
    home = Path(tmp_path_factory.mktemp("faults"))
    values = {"autoscaling.mode": "none", "consumer.replicas": CONSUMERS, "api.replicas": 2}
    async with installed(node, pod_servers, home, PARTITIONS, **values) as release:
        yield release


def ready_pods(release: Release, component: str) -> list[str]:
    return [
        p["metadata"]["name"]
        for p in release.pods(component)
        if p["metadata"].get("deletionTimestamp") is None
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    ]


async def every_pod_ready(release: Release, what: str) -> None:
    """Wait until both API pods and every consumer pod are Ready (none of them leaving)."""
    await wait_until(
        lambda: (
            len(ready_pods(release, "api")) == 2
            and len(ready_pods(release, "consumer")) == CONSUMERS
        ),
        120,
        what,
    )


@dataclass
class Sale:
    """A press of a new user on every coupon each round, 10 at a time, until ``stop`` (at most
    MAX_USERS rounds): however fast the node recovers, the sale outlasts the faults. ``codes``
    counts the answers, and transport errors by their type."""

    release: Release
    coupons: list[str]
    codes: Counter[str] = field(default_factory=Counter)
    over: asyncio.Event = field(default_factory=asyncio.Event)

    async def press(self, limit: asyncio.Semaphore, coupon_id: str, user: str) -> None:
        async with limit:
            try:
                answer = await self.release.stack.request_issue(coupon_id, user)
                self.codes[str(answer.status_code)] += 1
            except httpx.TransportError as exc:
                self.codes[type(exc).__name__] += 1

    async def run(self) -> None:
        limit = asyncio.Semaphore(10)
        for i in range(MAX_USERS):
            if self.over.is_set():
                return
            await asyncio.gather(*(self.press(limit, c, f"u{i}") for c in self.coupons))

    @property
    def failed(self) -> int:
        return self.codes.total() - self.codes["202"] - self.codes["409"] - self.codes["410"]

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.codes.items() if code.startswith("5"))

    async def around(self, faults: Callable[[], Awaitable[None]]) -> None:
        """The sale running before, during and 100 presses after ``faults``."""
        task = asyncio.create_task(self.run())
        try:
            await wait_until(lambda: self.codes.total() > 100, 60, "the sale under way")
            await faults()
            done = self.codes.total()
            await wait_until(lambda: self.codes.total() > done + 100, 60, "presses after")
        finally:
            self.over.set()  # also when a fault's recovery failed: the sale stops
            await task

    async def assert_exactly_once(self) -> None:
        """Every accepted press issued once (a press answered with an error may or may not
        have been), ``verify`` clean for every coupon."""
        release, accepted = self.release, self.codes["202"]
        assert accepted >= 1

        async def drained() -> bool:
            return sum([await release.stack.processed(c) for c in self.coupons]) >= accepted

        await wait_until(drained, 120, "every accepted press processed")
        for coupon_id in self.coupons:
            report = await asyncio.to_thread(release.verify, coupon_id)
            assert report["ok"] is True and report["violations"] == [], report
            (figures,) = report["coupons"]
            assert figures["issued_quantity"] == figures["issued_rows"], figures
            assert figures["double_issued"] == 0, figures
        issued = await release.stack.pool.fetchval(
            "SELECT count(*) FROM issue_requests WHERE status = 'ISSUED'"
            " AND coupon_id = ANY($1::uuid[])",
            [uuid.UUID(c) for c in self.coupons],
        )
        assert accepted <= issued <= accepted + self.failed, (issued, dict(self.codes))


async def test_faults_mid_sale_lose_and_double_nothing(release: Release, node: Node) -> None:
    stock = 100_000  # never sold out: every press of a new user is accepted unless it fails
    at_fault: dict[str, int] = {}  # presses answered when each fault struck
    sale = Sale(release, await coupons_on_every_partition(release.stack, stock))
    codes = sale.codes

    async def faults() -> None:
        # 1. A consumer pod deleted: SIGTERM, it finishes its batch, commits, leaves the group.
        victim = ready_pods(release, "consumer")[0]
        at_fault["consumer pod deleted"] = codes.total()
        release.kubectl("delete", "pod", victim, "--wait=false")
        await wait_until(
            lambda: (
                victim not in ready_pods(release, "consumer")
                and len(ready_pods(release, "consumer")) == CONSUMERS
            ),
            120,
            "a replacement consumer Ready",
            interval=0.5,
        )
        # 2. A consumer container SIGKILLed on the node: the kubelet restarts it in place.
        pod = release.cluster.get(
            f"/api/v1/namespaces/{release.namespace}/pods/{ready_pods(release, 'consumer')[0]}"
        )
        assert pod is not None
        container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://")[1]
        at_fault["consumer SIGKILLed"] = codes.total()
        node.containerd.ctr("tasks", "kill", "--signal", "SIGKILL", container_id)

        def restarted() -> bool:
            again = release.cluster.get(
                f"/api/v1/namespaces/{release.namespace}/pods/{pod['metadata']['name']}"
            )
            status = (again or {}).get("status", {}).get("containerStatuses", [{}])[0]
            return bool(status.get("restartCount", 0) >= 1 and status.get("ready"))

        await wait_until(restarted, 120, "the killed consumer restarted and Ready", interval=0.5)
        # 3. An API pod deleted behind its Service while presses keep coming.
        api_victim = ready_pods(release, "api")[0]
        at_fault["API pod deleted"] = codes.total()
        release.kubectl("delete", "pod", api_victim, "--wait=false")
        await wait_until(
            lambda: (
                api_victim not in [p["metadata"]["name"] for p in release.pods("api")]
                and len(ready_pods(release, "api")) == 2
            ),
            120,
            "the API pod replaced",
            interval=0.5,
        )

    await sale.around(faults)
    total = codes.total()
    (release.home / "codes.json").write_text(json.dumps(codes))
    print("faults: answers", dict(codes), "answered when each fault struck", at_fault)
    assert all(n < total for n in at_fault.values()), ("the sale ended before a fault", at_fault)
    assert sale.failed <= ERROR_BOUND * total, dict(codes)
    await sale.assert_exactly_once()


def images(pod: dict[str, Any]) -> set[str]:
    return {c["image"] for c in pod["spec"]["containers"]}


@dataclass
class Rollout:
    """The API and consumer pods sampled every 0.2 s through a rolling update: the fewest Ready
    API pods, the most consumers not leaving, and when each pod was first seen terminating and
    last seen at all."""

    release: Release
    fewest_api: int = 2
    most_consumers: int = CONSUMERS
    terminating: dict[str, float] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)

    async def watch(self) -> None:
        while True:
            now = time.monotonic()
            self.fewest_api = min(self.fewest_api, len(ready_pods(self.release, "api")))
            consumers = self.release.pods("consumer")
            # A terminating consumer is leaving the group (its batch finishing): not counted.
            staying = [p for p in consumers if "deletionTimestamp" not in p["metadata"]]
            self.most_consumers = max(self.most_consumers, len(staying))
            for pod in (*self.release.pods("api"), *consumers):
                name = pod["metadata"]["name"]
                self.last_seen[name] = now
                if "deletionTimestamp" in pod["metadata"]:
                    self.terminating.setdefault(name, now)
            await asyncio.sleep(0.2)

    def terminated_in(self, name: str) -> float:
        """Seconds from marked terminating to gone (to within two samples)."""
        return self.last_seen[name] - self.terminating.get(name, self.last_seen[name])


async def test_helm_upgrade_to_a_new_tag_mid_sale(release: Release, node: Node) -> None:
    """The same images under a second tag in the node's containerd; ``helm upgrade`` to it while
    a sale runs through the Service. Every API and consumer pod is replaced by one of the new
    tag; the API never has fewer Ready pods than replicas (maxUnavailable 0) and each old one
    serves through its preStop sleep; the group never has more members than the consumer
    replicas (maxSurge 0) besides those leaving it; no press is answered 5xx."""
    new_tag = "upgrade"
    for target in TARGETS:
        repository, tag = app_image(target)
        node.containerd.ctr(
            "images", "tag", "--force", f"{repository}:{tag}", f"{repository}:{new_tag}"
        )
    overrides = [
        a
        for key in ("image", "api.image", "consumer.image", "operator.image", "lagExporter.image")
        for a in ("--set-string", f"{key}.tag={new_tag}")
    ]
    await every_pod_ready(release, "every API and consumer pod Ready before the upgrade")
    before = {c: {p["metadata"]["name"] for p in release.pods(c)} for c in ("api", "consumer")}
    old = before["api"] | before["consumer"]
    sale = Sale(release, await coupons_on_every_partition(release.stack, 100_000))
    rollout = Rollout(release)
    took: dict[str, float] = {}

    async def upgrade() -> None:
        started = time.monotonic()
        await asyncio.to_thread(release.upgrade, *overrides)
        took["helm upgrade --wait"] = time.monotonic() - started
        # --wait ends with the new pods Ready; the old ones may still be leaving.
        await wait_until(
            lambda: not old & {p["metadata"]["name"] for c in before for p in release.pods(c)},
            120,
            "every old pod gone",
            interval=0.5,
        )
        took["every old pod gone"] = time.monotonic() - started

    watching = asyncio.create_task(rollout.watch())
    try:
        await sale.around(upgrade)
    finally:
        watching.cancel()
    (release.home / "upgrade-codes.json").write_text(json.dumps(sale.codes))
    api_exits = {n: round(rollout.terminated_in(n), 1) for n in before["api"]}
    print(
        "upgrade: answers",
        dict(sale.codes),
        "s:",
        {k: round(v, 1) for k, v in took.items()},
        "fewest API pods Ready",
        rollout.fewest_api,
        "old API pods terminating for",
        api_exits,
    )
    after = {c: release.pods(c) for c in ("api", "consumer")}
    assert (len(after["api"]), len(after["consumer"])) == (2, CONSUMERS), after
    for pods in after.values():
        for pod in pods:
            assert all(i.endswith(f":{new_tag}") for i in images(pod)), images(pod)
    assert rollout.fewest_api >= 2, "an API pod went before its replacement was Ready"
    # The preStop sleep (the chart's 5 s) ran before SIGTERM on every old API pod.
    assert all(s >= PRE_STOP - 0.5 for s in api_exits.values()), api_exits
    assert rollout.most_consumers <= CONSUMERS, "more consumers than replicas mid-rollout"
    assert sale.server_errors == 0, dict(sale.codes)
    assert sale.failed <= UPGRADE_TRANSPORT_ERRORS, dict(sale.codes)
    await sale.assert_exactly_once()


async def test_a_drain_mid_sale_is_held_by_the_disruption_budgets(
    release: Release, node: Node
) -> None:
    """``kubectl drain`` of the node while a sale runs: the API's and the consumers' budgets
    (maxUnavailable 1 each) let one pod of each go and refuse the second eviction, since the
    cordoned node cannot take a replacement. The sale goes on through the API pod left, with
    the consumer left taking every partition; no press answered 5xx. Uncordoned, the
    replacements start and every accepted press is issued once."""
    await every_pod_ready(release, "every API and consumer pod Ready before the drain")
    sale = Sale(release, await coupons_on_every_partition(release.stack, 100_000))
    rollout = Rollout(release)
    drained: dict[str, Any] = {}

    async def drain() -> None:
        # This release's pods only: the node's other tenants are not the budgets' business.
        done = await asyncio.to_thread(
            release.cluster.kubectl,
            *("drain", NODE_NAME, "--ignore-daemonsets", "--delete-emptydir-data"),
            f"--pod-selector=app.kubernetes.io/instance={NAME}",
            f"--timeout={DRAIN_TIMEOUT}s",
            check=False,
        )
        drained["exit"], drained["output"] = done.returncode, done.stdout + done.stderr
        drained["api"] = ready_pods(release, "api")
        drained["consumers"] = ready_pods(release, "consumer")
        # The sale goes on through what the budgets kept.
        presses = sale.codes.total()
        await wait_until(lambda: sale.codes.total() > presses + 100, 60, "presses while drained")
        release.cluster.kubectl("uncordon", NODE_NAME)
        await every_pod_ready(release, "the replacements Ready once uncordoned")

    watching = asyncio.create_task(rollout.watch())
    try:
        await sale.around(drain)
    finally:
        watching.cancel()
        release.cluster.kubectl("uncordon", NODE_NAME, check=False)
    print("drain: answers", dict(sale.codes), "exit", drained.get("exit"))
    # Refused, not merely slow: kubectl gave up on evictions the budgets would not allow.
    assert drained["exit"] != 0, drained["output"]
    assert "disruption budget" in drained["output"], drained["output"]
    assert len(drained["api"]) == 1 and len(drained["consumers"]) == 1, drained
    assert rollout.fewest_api >= 1, "the budget let every API pod go"
    assert sale.server_errors == 0, dict(sale.codes)
    assert sale.failed <= UPGRADE_TRANSPORT_ERRORS, dict(sale.codes)
    await sale.assert_exactly_once()
