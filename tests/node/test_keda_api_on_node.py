"""The API scaled on the requests it serves, on a real node: the chart's API ScaledObject.

A Prometheus on the host scrapes the API's pods every second, found from the API Service's
Endpoints and labelled as a ServiceMonitor labels them (namespace, and the Service as job). The
chart's API ScaledObject (``api.autoscaling.mode=keda``, CPU left out so that the requests in
flight alone decide) becomes KEDA's HPA. wrk holds 64
connections of presses on the API's Service; the HPA controller reads the in-flight sum through
external.metrics.k8s.io (KEDA's metrics server asks Prometheus with the chart's query) and raises
the API to its maximum; the kubelet starts the pods and they become Ready. wrk stops, the sum
falls to the scrapes' own, and the HPA scales in after its stabilization window. No press was
answered 5xx, and the coupon issued its stock once. When Prometheus no longer scrapes the API, the
HPA reports the metric it cannot read (FailedGetExternalMetric) rather than reading 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bench import wrk
from harness import wait_until
from harness.keda import KedaMetricsServer
from harness.kube import ControlPlane
from harness.node import Node
from tests.node.conftest import PodServers
from tests.node.release import NAME, Release, assert_issued, installed
from tests.node.timeline import Timeline
from tests.prometheus import PrometheusServer, new_workdir

pytestmark = [pytest.mark.node, pytest.mark.asyncio(loop_scope="session")]

API = f"{NAME}-coupon-issuer-api"
HPA = f"keda-hpa-{API}"
MAX_PODS = 3
IN_FLIGHT_PER_POD = 8  # 64 connections ask for 8 pods: the HPA takes the API to its maximum
CONNECTIONS = 64
STABILIZATION = 20
STOCK = 100


class Scraping:
    """Prometheus scraping, every second, every Service endpoint on a port named ``http``, in
    every namespace, labelled as a ServiceMonitor labels them (namespace, job = the Service, pod).

    Debian's Prometheus is built without Kubernetes discovery, so ``_follow`` reads the Endpoints
    objects that discovery would read and writes them as file discovery targets. It runs before
    the chart is installed, as a cluster's Prometheus does: helm's wait holds the release until
    the API's ScaledObject is Ready, which needs the query answered."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        workdir = self.workdir = new_workdir("node-prometheus-")
        self.targets = workdir / "targets.json"
        self.targets.write_text("[]")
        job = {"job_name": "service-endpoints", "file_sd_configs": [{"files": [str(self.targets)]}]}
        self.server = PrometheusServer(jobs=[], labels={}, workdir=workdir, scrape_configs=[job])
        self._following: asyncio.Task[None] | None = None

    def start(self) -> Scraping:
        self.server.start()
        self._following = asyncio.create_task(self._follow())
        return self

    async def _follow(self) -> None:
        with self.plane.client() as api:
            while True:
                answer = await asyncio.to_thread(api.get, "/api/v1/endpoints")
                answer.raise_for_status()
                self._write(
                    {
                        "targets": [f"{address['ip']}:{port['port']}"],
                        "labels": {
                            "namespace": found["metadata"]["namespace"],
                            "job": found["metadata"]["name"],
                            "pod": address.get("targetRef", {}).get("name", ""),
                        },
                    }
                    for found in answer.json()["items"]
                    for subset in found.get("subsets") or []
                    for port in subset.get("ports", [])
                    if port.get("name") == "http"
                    for address in subset.get("addresses") or []
                )
                await asyncio.sleep(0.5)

    def _write(self, groups: Iterable[dict[str, Any]]) -> None:
        written = self.targets.with_suffix(".tmp")
        written.write_text(json.dumps(list(groups)))
        written.replace(self.targets)  # Prometheus never reads half a file

    async def forget(self) -> None:
        """Stop following and leave Prometheus no target."""
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following
        self._write([])

    async def stop(self) -> None:
        await self.forget()
        self.server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scraping(node: Node) -> AsyncIterator[Scraping]:
    scraping = Scraping(node.plane).start()
    try:
        yield scraping
    finally:
        await scraping.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def release(
    node: Node,
    pod_servers: PodServers,
    keda: KedaMetricsServer,
    scraping: Scraping,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Release]:
    """One API pod to start, up to three; one consumer, not autoscaled."""
    home = Path(tmp_path_factory.mktemp("keda-api-release"))
    values = {
        "api.autoscaling.enabled": "true",
        "api.autoscaling.mode": "keda",
        "api.autoscaling.minReplicas": 1,
        "api.autoscaling.maxReplicas": MAX_PODS,
        "api.autoscaling.targetCPUUtilizationPercentage": 0,
        "api.autoscaling.scaleDownStabilizationSeconds": STABILIZATION,
        "api.autoscaling.keda.prometheusServer": scraping.server.url,
        "api.autoscaling.keda.inFlightPerPod": IN_FLIGHT_PER_POD,
        "api.autoscaling.keda.pollSeconds": 1,
        "autoscaling.mode": "none",
        "consumer.replicas": 1,
    }
    async with installed(node, pod_servers, home, 3, **values) as r:
        yield r


async def test_kedas_hpa_scales_the_api_on_requests_in_flight(
    release: Release, scraping: Scraping
) -> None:
    cluster, ns = release.cluster, release.namespace
    scale = f"/apis/apps/v1/namespaces/{ns}/deployments/{API}/scale"
    hpa_path = f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{HPA}"
    scaled = cluster.get(f"/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects/{API}")
    assert scaled is not None
    (trigger,) = scaled["spec"]["triggers"]  # CPU left out: the requests in flight alone
    query = trigger["metadata"]["query"]
    timeline = Timeline()
    at = timeline.at

    def replicas() -> int:
        return int((cluster.get(scale) or {})["spec"].get("replicas", 0))

    def ready() -> int:
        return int(release.deployment("api")["status"].get("readyReplicas", 0))

    def in_flight() -> float | None:
        """The chart's query, answered by Prometheus (None: no API pod scraped yet)."""
        found = scraping.server.query(query)
        return float(found[0]["value"][1]) if found else None

    hpa = await wait_until(lambda: cluster.get(hpa_path), 60, "KEDA's HPA")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["External"]
    await at("the API pod scraped", lambda: in_flight() is not None, 60)
    assert replicas() == 1
    coupon = await release.stack.create_coupon(STOCK)
    url = f"{release.stack.base_url}/api/coupons/{coupon}/issue/queue"
    args = wrk.command(
        url,
        "press",
        connections=CONNECTIONS,
        seconds=600,
        script_dir=release.home,
        user_prefix="hpa",
    )
    pipe = asyncio.subprocess.PIPE
    load = await asyncio.create_subprocess_exec(*args, stdout=pipe, stderr=pipe)
    try:
        await at(
            f"in flight above {IN_FLIGHT_PER_POD}",
            lambda: (in_flight() or 0) > IN_FLIGHT_PER_POD,
            60,
        )
        await at(f"HPA raised the API to {MAX_PODS}", lambda: replicas() == MAX_PODS, 90)
        await at(f"{MAX_PODS} API pods Ready", lambda: ready() == MAX_PODS, 120)
    finally:
        load.send_signal(signal.SIGINT)  # wrk stops early on SIGINT and still reports
        out, err = await asyncio.wait_for(load.communicate(), 60)
    assert load.returncode is not None
    pressed = wrk.result(load.returncode, out.decode(), err.decode())
    await at("HPA scaled the API in to 1", lambda: replicas() == 1, STABILIZATION + 60)
    await at("API pods back to 1", lambda: len(release.pods("api")) == 1, 120)
    timeline.write(release.home / "timeline.json", "API in-flight timeline")
    print("wrk:", pressed.as_dict())

    assert pressed.count_5xx() == 0 and pressed.socket_errors == 0, pressed.as_dict()
    assert pressed.count(202) == STOCK, pressed.as_dict()
    rescaled = [e["message"] for e in cluster.events(ns, involvedObject__name=HPA)]
    assert any(
        m.startswith(f"New size: {MAX_PODS};") and "external metric" in m for m in rescaled
    ), rescaled
    assert any(m.startswith("New size: 1;") for m in rescaled), rescaled
    await release.stack.wait_processed(coupon, STOCK)
    await assert_issued(release, coupon, STOCK)

    # The API pod no longer scraped: its series go stale and the query answers nothing, which is
    # an error the HPA shows (ignoreNullValues false), not a 0 it would scale in on.
    await scraping.forget()
    await wait_until(lambda: in_flight() is None, 30, "the API's series to go stale")

    def unable() -> str | None:
        conditions = (cluster.get(hpa_path) or {}).get("status", {}).get("conditions", [])
        for condition in conditions:
            if condition["type"] == "ScalingActive" and condition["status"] == "False":
                return str(condition["reason"])
        return None

    reason = await wait_until(unable, 60, "the HPA to report the metric it cannot read")
    assert reason == "FailedGetExternalMetric", reason
    assert replicas() == 1
