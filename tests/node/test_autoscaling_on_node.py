"""The loop the service exists for, closed on a real node (operator mode).

A burst of presses makes real lag on the broker; the operator (a pod on the node, as its
ServiceAccount, reaching the API server through the ``kubernetes`` Service) raises the consumer
Deployment to the partitions; the kubelet starts the pods; they join the group and drain the lag;
after the cooldown the operator scales back in to zero. Every accepted press is issued once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from harness import wait_until
from harness.node import Node
from tests.node.conftest import PodServers
from tests.node.release import NAME, Release, installed
from tests.stack import coupons_on_every_partition, holding_coupon_rows

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
    # One coupon per partition: the lag of one hot coupon is one consumer's work, whatever its
    # size (the policy caps it at one), so the burst spreads over every partition.
    per_coupon = 100
    coupons = await coupons_on_every_partition(release.stack, per_coupon)
    limit = asyncio.Semaphore(20)

    async def press(coupon_id: str, user: str) -> int:
        async with limit:
            return (await release.stack.request_issue(coupon_id, user)).status_code

    timeline: dict[str, float] = {}

    async def at(what: str, condition: Any, timeout: float) -> None:
        await wait_until(condition, timeout, what, interval=0.2)
        timeline[what] = time.monotonic() - started

    async def scale_out() -> None:  # watched while the burst runs: the operator acts mid-burst
        await at("operator raised replicas", lambda: replicas() >= 1, 60)
        await at(f"replicas = {PARTITIONS} partitions", lambda: replicas() == PARTITIONS, 60)

    started = time.monotonic()
    # The coupons' rows are held until the operator has scaled out: a consumer started at the
    # first poll cannot drain the burst before the next one (a fast one did, and the loop then
    # rightly stayed at one consumer). The lag is real: accepted presses wait in the broker.
    async with holding_coupon_rows(release.stack, coupons):
        watching = asyncio.create_task(scale_out())
        codes = await asyncio.gather(
            *(press(c, f"u{i}") for c in coupons for i in range(per_coupon))
        )
        assert codes.count(202) == len(codes), sorted(set(codes))
        timeline["burst accepted"] = time.monotonic() - started
        await watching

    async def drained() -> bool:
        done = [await release.stack.processed(c) for c in coupons]
        return sum(done) >= per_coupon * len(coupons)

    await at(f"{PARTITIONS} consumer pods Ready", lambda: ready() == PARTITIONS, 120)
    await at("every press processed", drained, 120)
    await at("lag 0 in the autoscaler's status", lambda: status().get("lag") == 0, 60)
    await at("scaled in to 0", lambda: replicas() == 0, 120)
    await at("consumer pods gone", lambda: not release.pods("consumer"), 120)
    (release.home / "timeline.json").write_text(json.dumps(timeline, indent=2))
    print("timeline, s after the burst began:", {k: round(v, 1) for k, v in timeline.items()})

    ups = cluster.events(ns, reason="ScaledUp", involvedObject__name=CONSUMER)
    # 0 -> 3 at once, or 0 -> 1 when the first poll saw only the first coupon's lag, then -> 3.
    assert any(f"-> {PARTITIONS}:" in e["message"] for e in ups), [e["message"] for e in ups]
    for coupon_id in coupons:
        report = await asyncio.to_thread(release.verify, coupon_id)
        assert report["ok"] is True and report["violations"] == [], report
        (figures,) = report["coupons"]
        assert figures["issued_quantity"] == figures["issued_rows"] == per_coupon, figures
        assert figures["double_issued"] == 0, figures
