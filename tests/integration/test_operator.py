"""The operator on a broker outage: kopf against a kmock Kubernetes API, a real Apache Kafka node.

The proof of record for the operator is tests/kube/test_operator.py (the real API server, the
chart's RBAC, the session's broker). What stays here is the broker going away and coming back: it
needs a broker of its own to stop, and kmock records every request, so "no scale patch while the
lag is unknown" is read from the requests rather than inferred.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest

from app.local.kafka import KafkaNode
from harness import wait_until
from tests.lag import new_topic, produce
from tests.operator_threads import OperatorThreads

NS, DEPLOYMENT, CAS = "shop", "consumer", "consumer-autoscaler"
CAS_RES = "coupons.example.com/v1/consumerautoscalers"
DEPLOY_RES = "apps/v1/deployments"


def cluster(api: Any, bootstrap: str, topic: str, group: str, replicas: int) -> None:
    """Declare what kopf touches and create the namespace, the Deployment and the autoscaler."""
    info = kmock.ResourceInfo
    api.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False)
    api.resources["v1/events"] = info(kind="Event", namespaced=True)
    api.resources[DEPLOY_RES] = info(kind="Deployment", namespaced=True, subresources={"scale"})
    api.resources[CAS_RES] = info(
        kind="ConsumerAutoscaler",
        namespaced=True,
        verbs={"get", "list", "watch", "patch"},
        subresources={"status"},
    )
    api.objects["v1/namespaces", None, NS] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NS, "resourceVersion": "1"},
    }
    api.objects[DEPLOY_RES, NS, DEPLOYMENT] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NS, "resourceVersion": "1"},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas},
    }
    api.objects[CAS_RES, NS, CAS] = {
        "apiVersion": "coupons.example.com/v1",
        "kind": "ConsumerAutoscaler",
        "metadata": {"name": CAS, "namespace": NS, "uid": uuid.uuid4().hex, "resourceVersion": "1"},
        "spec": {
            "targetRef": {"name": DEPLOYMENT},
            "kafka": {"bootstrap": bootstrap, "topic": topic, "consumerGroup": group},
            "minReplicas": 0,
            "lagPerReplica": 10,
            "scaleDownStabilizationSeconds": 2,
            "pollSeconds": 1,
        },
    }


def replicas(api: Any) -> int:
    return int(api.objects[DEPLOY_RES, NS, DEPLOYMENT].raw["spec"]["replicas"])


def status(api: Any) -> dict[str, Any]:
    return dict(api.objects[CAS_RES, NS, CAS].raw.get("status") or {})


def condition(api: Any, kind: str) -> dict[str, Any] | None:
    return next((c for c in status(api).get("conditions", []) if c["type"] == kind), None)


def scale_patches(api: Any) -> int:
    return sum(1 for r in api if r.method == "PATCH" and r.url.path.endswith("/scale"))


@pytest.fixture
def run_operator(kmock: Any) -> Iterator[Callable[[], None]]:
    """Start the operator against kmock once the test has declared its cluster.

    kopf gets a thread and an event loop of its own, as when embedded (tests/operator_threads.py).
    """
    runs = OperatorThreads()
    yield lambda: runs.start(NS, kopf.ConnectionInfo(server=str(kmock.url).rstrip("/")))
    runs.stop_all()


async def test_broker_down_keeps_replicas_and_sets_a_condition_until_it_is_back(
    kmock: Any, run_operator: Callable[[], None], tmp_path: Path
) -> None:
    broker = KafkaNode(tmp_path / "kafka").start()
    try:
        topic, group = await new_topic(broker.bootstrap, 2), f"g-{uuid.uuid4().hex[:8]}"
        await produce(broker.bootstrap, topic, 100)
        cluster(kmock, broker.bootstrap, topic, group, replicas=1)
        run_operator()
        await wait_until(lambda: replicas(kmock) == 2, 15, "scale-up to 2 partitions")
        patches = scale_patches(kmock)
        broker.stop()

        await wait_until(
            lambda: (condition(kmock, "BrokerReachable") or {}).get("status") == "False",
            30,
            "BrokerReachable=False",
        )
        assert (condition(kmock, "BrokerReachable") or {})["reason"] == "LagReadError"
        # Several polls later, still nothing scaled: replicas kept, no patch issued.
        await wait_until(lambda: "replicas kept" in status(kmock).get("reason", ""), 10, "a hold")
        assert replicas(kmock) == 2
        assert scale_patches(kmock) == patches

        broker.start()  # the same address and log dirs: the topic is there again
        await wait_until(
            lambda: (condition(kmock, "BrokerReachable") or {}).get("status") == "True",
            30,
            "BrokerReachable=True once the broker is back",
        )
    finally:
        broker.stop()
