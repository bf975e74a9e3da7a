"""The chart installed by helm on a real node: the kubelet runs its pods, probes and all.

helm installs the chart (ci/kind-values.yaml, the images `make image-check` builds) into a
namespace enforcing the restricted Pod Security Standard and waits: the migrations hook Job runs
on the node (nothing marks it done by hand), then every Deployment's pods become Ready through
their own probes. A sale goes through the API's Service (kube-proxy's ClusterIP), and
`coupon-issuer verify` runs in the API's container (kubectl exec, through the kubelet).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from harness.node import NODE_NAME, Node
from tests.node.conftest import PodServers
from tests.node.events import failures, probe_failures_once_ready
from tests.node.release import Release, installed

pytestmark = [pytest.mark.node, pytest.mark.asyncio(loop_scope="session")]

PARTITIONS = 3
CONSUMERS = 2


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def release(
    node: Node, pod_servers: PodServers, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Release]:
    """Fixed consumers (autoscaling.mode none): every Deployment has its pods from the start."""
    home = Path(tmp_path_factory.mktemp("chart"))
    values = {"autoscaling.mode": "none", "consumer.replicas": CONSUMERS}
    async with installed(node, pod_servers, home, PARTITIONS, **values) as release:
        yield release


async def test_every_pod_is_ready_through_its_probes(release: Release) -> None:
    expected = {"api": 1, "consumer": CONSUMERS, "lag-exporter": 1}
    for component, replicas in expected.items():
        pods = release.pods(component)
        assert len(pods) == replicas, (component, [p["metadata"]["name"] for p in pods])
        for pod in pods:
            name = pod["metadata"]["name"]
            assert pod["spec"]["nodeName"] == NODE_NAME, name
            conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
            assert conditions.get("Ready") == "True", (name, conditions)
            for status in pod["status"]["containerStatuses"]:
                assert status["ready"] and status["restartCount"] == 0, (name, status)
            for container in pod["spec"]["containers"]:
                probes = {"startupProbe", "livenessProbe", "readinessProbe"} & set(container)
                assert len(probes) == 3, (name, container["name"], probes)


async def test_no_failure_events(release: Release) -> None:
    events = release.cluster.events(release.namespace)
    assert failures(events) == []
    # A startup or readiness probe may fail while its pod starts (the API waits for its
    # dependencies, a consumer for its partitions): that is their job. Once a pod is Ready, none
    # may, and a liveness probe never.
    ready_since = {
        p["metadata"]["name"]: next(
            c["lastTransitionTime"] for c in p["status"]["conditions"] if c["type"] == "Ready"
        )
        for p in release.pods()
    }
    assert probe_failures_once_ready(events, ready_since) == [], ready_since


async def test_the_migrations_job_ran_on_the_node(release: Release) -> None:
    """helm waited for the hook Job (it is gone: hook-succeeded); its Events and tables stay."""
    events = release.cluster.events(release.namespace, involvedObject__kind="Job")
    assert any(e["reason"] == "Completed" for e in events), [
        (e["reason"], e.get("message")) for e in events
    ]
    tables = await release.stack.pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
        release.settings.db_schema,
    )
    assert {"coupons", "issue_requests", "schema_migrations"} <= {r[0] for r in tables}


async def test_a_sale_through_the_service_issues_the_stock_once(release: Release) -> None:
    stack = release.stack
    stock, users = 40, [f"u{i}" for i in range(150)]
    coupon_id = await stack.create_coupon(stock)
    limit = asyncio.Semaphore(20)

    async def press(user: str) -> int:
        async with limit:
            return (await stack.request_issue(coupon_id, user)).status_code

    codes = await asyncio.gather(*(press(u) for u in users))
    assert codes.count(202) == stock, sorted(set(codes))
    assert set(codes) == {202, 410}, sorted(set(codes))  # accepted, then sold out
    await stack.wait_processed(coupon_id, stock, timeout=90)
    report = await asyncio.to_thread(release.verify, coupon_id)
    assert report["ok"] is True and report["violations"] == [], report
    (figures,) = report["coupons"]
    assert figures["issued_quantity"] == figures["issued_rows"] == stock, figures
    assert figures["double_issued"] == 0, figures
