"""The operator against the real API server, as the chart's ServiceAccount, on a real broker's lag.

The chart is installed in operator mode; the operator (``app.autoscaling.operator.operate``, in a
thread of this process) authenticates with a token from the TokenRequest API for the chart's
operator ServiceAccount, as its pod would, so every call it makes is authorized by the chart's
Role. The API server's audit log records each of them under that identity: the proof that it
needed nothing more (no 403) and patched the scale exactly once per change.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kopf
import pytest_asyncio

from harness import wait_until
from tests.k8s_helpers import ADMIN_TOKEN_ARGS, CHART
from tests.kube.cluster import Cluster
from tests.lag import commit_everything, new_topic, produce
from tests.operator_threads import OperatorThreads

RELEASE = "shop"
CONSUMER, API, OPERATOR = (
    f"{RELEASE}-coupon-issuer-consumer",
    f"{RELEASE}-coupon-issuer-api",
    (f"{RELEASE}-coupon-issuer-operator"),
)
CAS_PATH = "/apis/coupons.example.com/v1/namespaces/{ns}/consumerautoscalers/" + CONSUMER


def chart_values(bootstrap: str, topic: str, group: str) -> list[str]:
    """Operator mode on the test's topic, quick to react (a 2 s window, 1 s polls)."""
    values = {
        "autoscaling.mode": "operator",
        "autoscaling.minReplicas": "0",
        "autoscaling.lagPerReplica": "10",
        "autoscaling.scaleDownStabilizationSeconds": "2",
        "autoscaling.pollSeconds": "1",
        "kafka.bootstrap": bootstrap,
        "kafka.topic": topic,
        "kafka.consumerGroup": group,
        "kafka.partitions": "3",
        "migrations.enabled": "false",  # the hook is test_helm's; here nothing needs the tables
    }
    return [*ADMIN_TOKEN_ARGS, *(a for k, v in values.items() for a in ("--set", f"{k}={v}"))]


def audit(log: Path, user: str) -> list[dict[str, Any]]:
    """The API server's audit events of ``user``, in order."""
    lines = log.read_text().splitlines() if log.exists() else []
    events = (json.loads(line) for line in lines)
    return [e for e in events if e["user"]["username"] == user and e["stage"] == "ResponseComplete"]


def assert_can_only_do_its_job(cluster: Cluster, kubeconfig: Path, namespace: str) -> None:
    """``kubectl auth can-i`` as the operator: its calls yes; Secrets, other Deployments, pods,
    deleting, other namespaces no."""

    def can(*args: str, ns: str = namespace) -> bool:
        done = cluster.kubectl("auth", "can-i", *args, "-n", ns, kubeconfig=kubeconfig, check=False)
        assert done.stdout.strip() in {"yes", "no"}, done.stdout + done.stderr
        return done.stdout.strip() == "yes"

    scale = ("--subresource=scale",)
    for allowed in [
        ("patch", f"deployments/{CONSUMER}", *scale),
        ("get", f"deployments/{CONSUMER}", *scale),
        ("watch", "consumerautoscalers.coupons.example.com"),
        ("patch", f"consumerautoscalers.coupons.example.com/{CONSUMER}", "--subresource=status"),
        ("create", "events"),
    ]:
        assert can(*allowed), allowed
    for refused in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("get", "secrets/coupon-issuer"),
        ("patch", f"deployments/{API}", *scale),
        ("patch", f"deployments/{OPERATOR}", *scale),
        ("patch", f"deployments/{CONSUMER}"),
        ("update", f"deployments/{CONSUMER}"),
        ("delete", f"deployments/{CONSUMER}"),
        ("list", "deployments"),
        ("create", "pods"),
        ("delete", "consumerautoscalers.coupons.example.com"),
    ]:
        assert not can(*refused), refused
    assert not can("patch", f"deployments/{CONSUMER}", *scale, ns="default")
    assert not can("list", "consumerautoscalers.coupons.example.com", ns="default")


@pytest_asyncio.fixture
async def operator(cluster: Cluster) -> AsyncIterator[Callable[[str, str], None]]:
    """Start the operator for a namespace with a token; stopped at the end of the test."""
    runs = OperatorThreads()

    def start(namespace: str, token: str) -> None:
        connection = kopf.ConnectionInfo(
            server=cluster.plane.url, ca_path=str(cluster.plane.ca), scheme="Bearer", token=token
        )
        runs.start(namespace, connection)

    yield start
    await asyncio.to_thread(runs.stop_all)


async def test_the_operator_scales_by_real_lag_as_its_service_account(
    cluster: Cluster,
    namespace: str,
    kafka_bootstrap: str,
    operator: Callable[[str, str], None],
    tmp_path: Path,
) -> None:
    topic, group = await new_topic(kafka_bootstrap, 3), f"g-{uuid.uuid4().hex[:8]}"
    values = chart_values(kafka_bootstrap, topic, group)
    await asyncio.to_thread(cluster.helm, "install", RELEASE, CHART, "-n", namespace, *values)
    cas_path = CAS_PATH.format(ns=namespace)
    scale_path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{CONSUMER}/scale"
    user = f"system:serviceaccount:{namespace}:{OPERATOR}"

    def replicas() -> int:
        return int((cluster.get(scale_path) or {})["spec"].get("replicas", 0))

    def status() -> dict[str, Any]:
        return dict((cluster.get(cas_path) or {}).get("status") or {})

    def condition(kind: str) -> dict[str, Any]:
        return next((c for c in status().get("conditions", []) if c["type"] == kind), {})

    def events(reason: str) -> list[dict[str, Any]]:
        return cluster.events(namespace, reason=reason, involvedObject__name=CONSUMER)

    token = cluster.plane.request_token(namespace, OPERATOR)
    assert_can_only_do_its_job(
        cluster, cluster.plane.token_kubeconfig(token, tmp_path / "op"), namespace
    )
    operator(namespace, token)
    await wait_until(lambda: condition("BrokerReachable").get("status") == "True", 30, "a poll")
    await wait_until(lambda: replicas() == 0, 30, "no lag: down to minReplicas 0")

    await produce(kafka_bootstrap, topic, 300)  # wants 30 consumers at 10 per replica
    await wait_until(lambda: replicas() == 3, 30, "scale-up to the 3 partitions")
    await wait_until(
        lambda: status().get("desiredReplicas") == 3 and status().get("partitions") == 3,
        30,
        "the scale-up in the status subresource",
    )
    scaled_up = await wait_until(lambda: events("ScaledUp"), 30, "a ScaledUp event")
    assert scaled_up[0]["involvedObject"]["kind"] == "ConsumerAutoscaler"
    assert scaled_up[0]["message"].startswith("0 -> 3")
    # The Deployment acted on it: its ReplicaSet made 3 pods (Pending: no nodes).
    pods = f"/api/v1/namespaces/{namespace}/pods"
    consumer_pods = {"labelSelector": "app.kubernetes.io/component=consumer"}
    await wait_until(lambda: len(cluster.items(pods, **consumer_pods)) == 3, 30, "3 consumer pods")

    # A helm upgrade leaves the replicas to the operator (the chart omits them in this mode).
    await asyncio.to_thread(
        cluster.helm, "upgrade", RELEASE, CHART, "-n", namespace, *values, "--set",
        "config.logLevel=DEBUG",
    )  # fmt: skip
    assert replicas() == 3

    await commit_everything(kafka_bootstrap, topic, group, 3)
    await wait_until(lambda: status().get("lag") == 0, 30, "the drained lag in the status")
    await wait_until(lambda: replicas() == 0, 30, "scale to zero after the window")
    await wait_until(lambda: events("ScaledDown"), 30, "a ScaledDown event")
    await wait_until(lambda: status().get("currentReplicas") == 0, 30, "0 in the status")

    calls = audit(cluster.plane.audit_log, user)
    assert calls, "the operator's requests are not in the audit log under its identity"
    refused = [(c["verb"], c["requestURI"], c["responseStatus"]["code"]) for c in calls]
    assert [r for r in refused if r[2] >= 400] == []  # its Role granted everything it asked
    scale_patches = [
        c
        for c in calls
        if c["verb"] == "patch" and c.get("objectRef", {}).get("subresource") == "scale"
    ]
    # Installed at the API's default of 1: 1 -> 0 (no lag), 0 -> 3, 3 -> 0, and none while steady.
    changes = [e["message"].split(":")[0] for e in events("ScaledUp") + events("ScaledDown")]
    assert sorted(changes) == ["0 -> 3", "1 -> 0", "3 -> 0"]
    assert len(scale_patches) == 3
    assert {c["objectRef"]["name"] for c in scale_patches} == {CONSUMER}
    assert not [c for c in calls if c.get("objectRef", {}).get("resource") == "secrets"]

    # An autoscaler pointed at another Deployment gets a 403 from the Role, and says so.
    rogue = {
        "apiVersion": "coupons.example.com/v1",
        "kind": "ConsumerAutoscaler",
        "metadata": {"name": "rogue"},
        "spec": {**(cluster.get(cas_path) or {})["spec"], "targetRef": {"name": API}},
    }
    cas_list = cas_path.rsplit("/", 1)[0]
    cluster.api.post(cas_list, json=rogue).raise_for_status()
    api_replicas = (cluster.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{API}") or {})[
        "spec"
    ]["replicas"]

    def rogue_target() -> dict[str, Any]:
        conditions = ((cluster.get(f"{cas_list}/rogue") or {}).get("status") or {}).get(
            "conditions", []
        )
        return next((c for c in conditions if c["type"] == "TargetFound"), {})

    found = await wait_until(lambda: rogue_target().get("status") == "False", 30, "TargetFound")
    assert found
    assert "HTTP 403" in rogue_target()["message"]
    api_now = cluster.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{API}") or {}
    assert api_now["spec"]["replicas"] == api_replicas
