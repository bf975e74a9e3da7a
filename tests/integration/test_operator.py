"""The operator end to end: kopf against a kmock Kubernetes API, lag from a real Apache Kafka."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.autoscaling.operator import operate
from app.local_kafka import KafkaNode
from harness import wait_until

NS, DEPLOYMENT, CAS = "shop", "consumer", "consumer-autoscaler"
CAS_RES = "coupons.example.com/v1/consumerautoscalers"
DEPLOY_RES = "apps/v1/deployments"


async def new_topic(bootstrap: str, partitions: int, name: str = "") -> str:
    topic = name or f"op-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


async def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        batch = [await producer.send(topic, b"m") for _ in range(count)]
        await asyncio.gather(*batch)
    finally:
        await producer.stop()


async def commit_everything(bootstrap: str, topic: str, group: str, partitions: int) -> None:
    """What a consumer group that caught up would have committed (no join needed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while len(await consumer.getmany(timeout_ms=200)) > 0:
            pass  # read to the end: positions are then the high watermarks
        await consumer.commit({tp: await consumer.position(tp) for tp in tps})
    finally:
        await consumer.stop()


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


def replica_history(api: Any) -> list[int]:
    versions = api.objects[DEPLOY_RES, NS, DEPLOYMENT, :]
    return [int(v.raw["spec"]["replicas"]) for v in versions if v is not None]


def status(api: Any) -> dict[str, Any]:
    return dict(api.objects[CAS_RES, NS, CAS].raw.get("status") or {})


def condition(api: Any, kind: str) -> dict[str, Any] | None:
    return next((c for c in status(api).get("conditions", []) if c["type"] == kind), None)


def status_reasons(api: Any) -> list[tuple[Any, str]]:
    """Every (lag, reason) the operator wrote to the status, in order."""
    return [
        (r.data["status"].get("lag"), str(r.data["status"]["reason"]))
        for r in api
        if r.method == "PATCH"
        and isinstance(r.data, dict)
        and "reason" in (r.data.get("status") or {})
    ]


def scale_patches(api: Any) -> int:
    return sum(1 for r in api if r.method == "PATCH" and r.url.path.endswith("/scale"))


def events(api: Any) -> list[dict[str, Any]]:
    return [r.data for r in api if r.method == "POST" and r.url.path.endswith("/events")]


@pytest.fixture
def run_operator(kmock: Any) -> Iterator[Callable[[], None]]:
    """Start the operator against kmock once the test has declared its cluster.

    kopf gets a thread and an event loop of its own, as when embedded: on exit it cancels every
    task of its loop that it did not start, which in the tests' shared loop would be theirs.
    """
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start() -> None:
        connection = kopf.ConnectionInfo(server=str(kmock.url).rstrip("/"))
        thread = threading.Thread(
            target=asyncio.run,
            args=(operate([NS], connection=connection, stop_flag=stop),),
            name="operator",
        )
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=20)
        assert not thread.is_alive(), "the operator did not stop"


async def test_lag_scales_up_to_the_partitions_then_down_after_stabilization(
    kmock: Any, run_operator: Callable[[], None], kafka_bootstrap: str
) -> None:
    topic, group = await new_topic(kafka_bootstrap, 3), f"g-{uuid.uuid4().hex[:8]}"
    cluster(kmock, kafka_bootstrap, topic, group, replicas=0)
    run_operator()
    await wait_until(lambda: condition(kmock, "BrokerReachable"), 30, "a first poll")
    assert replicas(kmock) == 0  # no lag: stays at zero

    await produce(kafka_bootstrap, topic, 300)  # wants 30 consumers at 10 per replica
    await wait_until(lambda: replicas(kmock) == 3, 10, "scale-up to the 3 partitions")
    # The status is a separate write after the scale patch: wait for it, do not race it.
    await wait_until(
        lambda: status(kmock).get("desiredReplicas") == 3 and status(kmock).get("partitions") == 3,
        10,
        "the scale-up in status",
    )
    await wait_until(lambda: events(kmock), 10, "a ScaledUp event")
    assert events(kmock)[0]["reason"] == "ScaledUp"

    await commit_everything(kafka_bootstrap, topic, group, 3)
    await wait_until(lambda: status(kmock).get("lag") == 0, 10, "the drained lag in status")
    await wait_until(lambda: replicas(kmock) == 0, 15, "scale to zero after the window")
    # The stabilization window held the 3 replicas after the lag was gone: some status written
    # before the scale-down says so (read from the recorded writes, not raced).
    assert any(lag == 0 and reason.startswith("hold 3") for lag, reason in status_reasons(kmock))

    assert max(replica_history(kmock)) == 3  # never above the partitions
    assert scale_patches(kmock) == 2  # idempotent: one patch per change, none while steady
    await wait_until(lambda: len(events(kmock)) == 2, 10, "a ScaledDown event")
    assert events(kmock)[1]["reason"] == "ScaledDown"
    await wait_until(lambda: status(kmock).get("lastDecision") == "down", 10, "the decision")
    assert condition(kmock, "BrokerReachable")["status"] == "True"  # type: ignore[index]


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
