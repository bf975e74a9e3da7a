"""The loop closed on a real node in KEDA mode: KEDA's HPA scales the consumers by lag.

KEDA's operator and metrics API server run as host processes (harness/keda.py); the metrics
server is registered through the API server's aggregation layer as ``external.metrics.k8s.io``.
The chart's ScaledObject becomes an HPA (KEDA's operator); a burst of presses makes real lag;
KEDA's operator wakes the consumers from zero (0 -> 1), kube-controller-manager's HPA controller
reads the lag through the aggregation layer and raises the Deployment to the partitions; the
kubelet starts the pods; they join the group and drain the lag; the HPA scales back to one after
its stabilization window and KEDA to zero after its cooldown. Every accepted press is issued once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from harness import wait_until
from harness.keda import KedaMetricsServer
from harness.node import Node
from tests.node.burst import Burst
from tests.node.conftest import PodServers
from tests.node.release import NAME, Release, installed

pytestmark = [pytest.mark.node, pytest.mark.asyncio(loop_scope="session")]

PARTITIONS = 3
CONSUMER = f"{NAME}-coupon-issuer-consumer"
HPA = f"keda-hpa-{CONSUMER}"
# The HPA keeps the consumers this long after the lag is gone (the new pods, started as the
# burst's rows are released, must be Ready before it scales in: a fast drain leaves them seconds),
# KEDA waits this long after the trigger went inactive before 1 -> 0: far enough apart (with the
# controller-manager's 5 s HPA sync) that the two scale-ins are seen one after the other.
STABILIZATION = 30
COOLDOWN = 60


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def release(
    node: Node,
    pod_servers: PodServers,
    keda: KedaMetricsServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Release]:
    """ci/kind-values.yaml's autoscaling (0..3 consumers, 5 messages of lag per consumer, a 2 s
    poll) in KEDA mode, with a short stabilization window and cooldown."""
    home = Path(tmp_path_factory.mktemp("keda-release"))
    values = {
        "autoscaling.mode": "keda",
        "autoscaling.scaleDownStabilizationSeconds": STABILIZATION,
        "autoscaling.keda.cooldownPeriod": COOLDOWN,
    }
    async with installed(node, pod_servers, home, PARTITIONS, **values) as r:
        yield r


async def test_kedas_hpa_scales_out_on_lag_drains_and_scales_in(release: Release) -> None:
    cluster, ns = release.cluster, release.namespace
    scale = f"/apis/apps/v1/namespaces/{ns}/deployments/{CONSUMER}/scale"
    hpa_path = f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{HPA}"

    def replicas() -> int:
        return int((cluster.get(scale) or {})["spec"].get("replicas", 0))

    def ready() -> int:
        return int(release.deployment("consumer")["status"].get("readyReplicas", 0))

    hpa = await wait_until(lambda: cluster.get(hpa_path), 60, "KEDA's HPA")
    (metric,) = hpa["spec"]["metrics"]
    metric_name = metric["external"]["metric"]["name"]
    selector = ",".join(
        f"{k}={v}" for k, v in metric["external"]["metric"]["selector"]["matchLabels"].items()
    )

    def lag_metric() -> str | None:
        """The lag as the HPA controller reads it: through the aggregation layer."""
        path = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric_name}"
        answer = cluster.api.get(path, params={"labelSelector": selector})
        answer.raise_for_status()
        items = answer.json()["items"]
        return str(items[0]["value"]) if items else None

    # The Deployment starts with one consumer; KEDA takes it to 0 once the trigger has been
    # inactive for the cooldown.
    await wait_until(
        lambda: replicas() == 0 and not release.pods("consumer"), COOLDOWN + 60, "0 consumers"
    )
    assert lag_metric() == "0"
    burst = await Burst.on(release)

    async def scale_out() -> None:
        await burst.at("KEDA activated 0 -> 1", lambda: replicas() >= 1, 60)
        await burst.at(f"HPA raised to {PARTITIONS}", lambda: replicas() == PARTITIONS, 90)

    # The rows are held until the HPA has scaled out: one consumer woken by KEDA could
    # otherwise drain the burst before the HPA's next sync.
    await burst.run(scale_out)
    await burst.at(f"{PARTITIONS} consumer pods Ready", lambda: ready() == PARTITIONS, 120)
    await burst.at("every press processed", burst.drained, 120)
    await burst.at("lag 0 in external.metrics.k8s.io", lambda: lag_metric() == "0", 60)
    await burst.at("HPA scaled in to 1", lambda: replicas() == 1, 60)
    await burst.at("KEDA deactivated to 0", lambda: replicas() == 0, COOLDOWN + 60)
    await burst.at("consumer pods gone", lambda: not release.pods("consumer"), 120)
    burst.write("keda timeline")

    # The scale-out to the partitions was the HPA controller's, on KEDA's external metric.
    rescaled = [e["message"] for e in cluster.events(ns, involvedObject__name=HPA)]
    assert any(
        m.startswith(f"New size: {PARTITIONS};") and "external metric" in m for m in rescaled
    ), rescaled
    assert any(m.startswith("New size: 1;") for m in rescaled), rescaled
    keda_events = [
        e["message"]
        for e in cluster.events(ns, involvedObject__name=CONSUMER)
        if e["reason"].startswith("KEDAScaleTarget")
    ]
    assert any("from 0 to 1" in m for m in keda_events), keda_events
    assert any("from 1 to 0" in m for m in keda_events), keda_events
    await burst.verify()
