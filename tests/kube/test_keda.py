"""KEDA's own operator (v2.17, built from the module proxy) on the chart's keda mode, with the
real broker's lag: it takes the ScaledObject (Ready), creates the HPA the chart's values describe,
and its Kafka scaler wakes the consumers from zero on lag and puts them back to zero once the lag
is drained and the cooldown passed.

Scaling from 1 up to the partitions is the HPA's, on the external metric KEDA's metrics API
server serves through the aggregation layer: that loop runs on the real node
(tests/node/test_keda_on_node.py; docs/deploy.md, "KEDA's operator").
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import wait_until
from harness.keda import CRDS, NAMESPACE, KedaOperator
from tests import servers
from tests.k8s_helpers import ADMIN_TOKEN_ARGS, CHART
from tests.kube.cluster import Cluster
from tests.lag import commit_everything, new_topic, produce

RELEASE = "sale"
CONSUMER = f"{RELEASE}-coupon-issuer-consumer"


@pytest.fixture(scope="module")
def keda(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KedaOperator]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", CRDS)
    if cluster.get(f"/api/v1/namespaces/{NAMESPACE}") is None:
        cluster.api.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
    operator = KedaOperator(directory=Path(tmp_path_factory.mktemp("keda")), plane=cluster.plane)
    operator.start()
    watched = servers.session_servers()
    watched.watch("keda-operator", operator.describe_exit)
    yield operator
    watched.unwatch("keda-operator")
    operator.stop()


def chart_values(bootstrap: str, topic: str, group: str) -> list[str]:
    values = {
        "autoscaling.mode": "keda",
        "autoscaling.minReplicas": "0",
        "autoscaling.lagPerReplica": "10",
        "autoscaling.activationLag": "5",
        "autoscaling.pollSeconds": "1",
        "autoscaling.scaleDownStabilizationSeconds": "7",
        "autoscaling.keda.cooldownPeriod": "3",
        "kafka.bootstrap": bootstrap,
        "kafka.topic": topic,
        "kafka.consumerGroup": group,
        "kafka.partitions": "3",
        "migrations.enabled": "false",
    }
    return [*ADMIN_TOKEN_ARGS, *(a for k, v in values.items() for a in ("--set", f"{k}={v}"))]


async def test_kedas_operator_builds_the_hpa_and_activates_on_real_lag(
    cluster: Cluster, namespace: str, kafka_bootstrap: str, keda: KedaOperator
) -> None:
    topic, group = await new_topic(kafka_bootstrap, 3), f"g-{uuid.uuid4().hex[:8]}"
    values = chart_values(kafka_bootstrap, topic, group)
    await asyncio.to_thread(cluster.helm, "install", RELEASE, CHART, "-n", namespace, *values)
    so_path = f"/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects/{CONSUMER}"
    hpa_path = (
        f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/keda-hpa-{CONSUMER}"
    )
    scale_path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{CONSUMER}/scale"

    def so_condition(kind: str) -> str:
        conditions = ((cluster.get(so_path) or {}).get("status") or {}).get("conditions", [])
        return next((c["status"] for c in conditions if c["type"] == kind), "")

    def replicas() -> int:
        return int((cluster.get(scale_path) or {})["spec"].get("replicas", 0))

    def events(reason: str) -> list[dict[str, Any]]:
        return cluster.events(namespace, reason=reason, involvedObject__name=CONSUMER)

    await wait_until(lambda: so_condition("Ready") == "True", 60, "the ScaledObject Ready")
    hpa = await wait_until(lambda: cluster.get(hpa_path), 30, "KEDA's HPA")
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": CONSUMER,
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 3)  # never above the partitions
    (metric,) = spec["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "10"}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 7

    # No lag: KEDA takes the Deployment (created at 1) to zero.
    await wait_until(lambda: replicas() == 0, 60, "KEDA deactivating to 0")
    await wait_until(lambda: so_condition("Active") == "False", 30, "the trigger inactive")

    await produce(kafka_bootstrap, topic, 300)
    await wait_until(lambda: replicas() == 1, 30, "KEDA's Kafka scaler activating 0 -> 1")
    await wait_until(lambda: so_condition("Active") == "True", 30, "the trigger active")
    activated = await wait_until(lambda: events("KEDAScaleTargetActivated"), 30, "an Event")
    assert "from 0 to 1" in activated[0]["message"]

    await commit_everything(kafka_bootstrap, topic, group, 3)
    await wait_until(lambda: so_condition("Active") == "False", 30, "the trigger inactive")
    await wait_until(lambda: replicas() == 0, 30, "back to 0 after the cooldown")
    await wait_until(
        lambda: any("from 1 to 0" in e["message"] for e in events("KEDAScaleTargetDeactivated")),
        30,
        "a KEDAScaleTargetDeactivated Event from 1 to 0",
    )
