"""The loop the service exists for, closed on a real node (operator mode).

A burst of presses makes real lag on the broker; the operator (a pod on the node, as its
ServiceAccount, reaching the API server through the ``kubernetes`` Service) raises the consumer
Deployment to the partitions; the kubelet starts the pods; they join the group and drain the lag;
after the cooldown the operator scales back in to zero. Every accepted press is issued once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from harness import wait_until
from harness.node import Node
from tests.node.burst import Burst
from tests.node.conftest import PodServers
from tests.node.release import NAME, Release, installed

pytestmark = [pytest.mark.node, pytest.mark.asyncio(loop_scope="session")]

PARTITIONS = 3
CONSUMER = f"{NAME}-coupon-issuer-consumer"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def release(
    node: Node, pod_servers: PodServers, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Release]:
    """ci/kind-values.yaml's operator settings: 0..3 consumers, 5 messages of lag per consumer,
    a 2 s poll, 30 s before scaling in."""
    home = Path(tmp_path_factory.mktemp("autoscaling"))
    async with installed(
        node, pod_servers, home, PARTITIONS, **{"autoscaling.mode": "operator"}
    ) as r:
        yield r


async def test_burst_scales_out_drains_and_scales_in(release: Release) -> None:
    cluster, ns = release.cluster, release.namespace
    scale = f"/apis/apps/v1/namespaces/{ns}/deployments/{CONSUMER}/scale"
    cas = f"/apis/coupons.example.com/v1/namespaces/{ns}/consumerautoscalers/{CONSUMER}"

    def replicas() -> int:
        return int((cluster.get(scale) or {})["spec"].get("replicas", 0))

    def ready() -> int:
        return int(release.deployment("consumer")["status"].get("readyReplicas", 0))

    def status() -> dict[str, Any]:
        return dict((cluster.get(cas) or {}).get("status") or {})

    await wait_until(lambda: replicas() == 0 and not release.pods("consumer"), 60, "0 consumers")
    burst = await Burst.on(release)

    async def scale_out() -> None:  # watched while the burst runs: the operator acts mid-burst
        await burst.at("operator raised replicas", lambda: replicas() >= 1, 60)
        await burst.at(f"replicas = {PARTITIONS} partitions", lambda: replicas() == PARTITIONS, 60)

    await burst.run(scale_out)
    await burst.at(f"{PARTITIONS} consumer pods Ready", lambda: ready() == PARTITIONS, 120)
    await burst.at("every press processed", burst.drained, 120)
    await burst.at("lag 0 in the autoscaler's status", lambda: status().get("lag") == 0, 60)
    await burst.at("scaled in to 0", lambda: replicas() == 0, 120)
    await burst.at("consumer pods gone", lambda: not release.pods("consumer"), 120)
    burst.write("timeline")

    ups = cluster.events(ns, reason="ScaledUp", involvedObject__name=CONSUMER)
    # 0 -> 3 at once, or 0 -> 1 when the first poll saw only the first coupon's lag, then -> 3.
    assert any(f"-> {PARTITIONS}:" in e["message"] for e in ups), [e["message"] for e in ups]
    await burst.verify()
