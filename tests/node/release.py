"""The chart installed by helm on the node, for one test module: its namespace, settings, and the
tests' Stack helpers talking to the API through its Service."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from harness import isolated, wait_until
from harness.node import Node
from tests.k8s_helpers import CHART
from tests.kube.cluster import Cluster
from tests.node.conftest import PodServers, app_image
from tests.stack import Stack

PROFILE = CHART / "ci" / "kind-values.yaml"
# helm's own deadline, inside the 300 s its process is given (Cluster.run): a wait that runs out
# then fails with helm's account of what was not ready, not with the process killed.
HELM_WAIT = ("--wait", "--timeout", "240s")
NAME = "coupons"


@dataclass
class ServiceStack(Stack):
    """The tests' Stack helpers, talking to the API through its Service (kube-proxy)."""

    service_url: str = ""

    @property
    def base_url(self) -> str:
        return self.service_url


@dataclass
class Release:
    cluster: Cluster
    namespace: str
    settings: Settings
    stack: ServiceStack
    home: Path
    values: list[str]  # the install's --set arguments, which an upgrade keeps

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.cluster.kubectl("-n", self.namespace, *args, check=check).stdout

    def pods(self, component: str | None = None) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/component={component}" if component else ""
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        return self.cluster.items(path, labelSelector=selector)

    def deployment(self, component: str) -> dict[str, Any]:
        path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{NAME}-coupon-issuer-{component}"
        found = self.cluster.get(path)
        assert found is not None, path
        return found

    def upgrade(self, *overrides: str) -> None:
        """helm upgrade --wait with the install's values, ``overrides`` (--set-string ...) last:
        helm applies same-kind flags in order."""
        self.cluster.helm(
            *("upgrade", NAME, CHART, "-n", self.namespace, "-f", PROFILE),
            *self.values,
            *overrides,
            *HELM_WAIT,
        )

    def verify(self, coupon_id: str) -> dict[str, Any]:
        """`coupon-issuer verify` in the API's container (kubectl exec: API server -> kubelet)."""
        out = self.kubectl(
            *("exec", f"deploy/{NAME}-coupon-issuer-api", "--"),
            *("coupon-issuer", "verify", "--json", "--coupon", coupon_id),
        )
        return dict(json.loads(out))


def chart_values(settings: Settings, servers: PodServers, values: dict[str, Any]) -> list[str]:
    """--set arguments: our images (pullPolicy Never, from ci/kind-values.yaml), the pod-reachable
    servers, this release's own schema, prefix, topics and group; ``values`` win."""
    images = {
        "image": app_image("runtime"),
        "api.image": app_image("api"),
        "consumer.image": app_image("consumer"),
        "operator.image": app_image("operator"),
        "lagExporter.image": app_image("lag-exporter"),
    }
    strings = {
        **{f"{k}.repository": repo for k, (repo, _) in images.items()},
        **{f"{k}.tag": tag for k, (_, tag) in images.items()},
        "kafka.bootstrap": servers.pod_bootstrap,
        "kafka.topic": settings.topic,
        "kafka.dlqTopic": settings.dlq_topic,
        "kafka.consumerGroup": settings.consumer_group,
        "database.schema": settings.db_schema,
        "database.url": servers.pod_database_url,
        "redis.url": servers.redis.url,
        "redis.prefix": settings.redis_prefix,
        "auth.adminToken": settings.admin_token.get_secret_value() if settings.admin_token else "",
    }
    args = [a for k, v in strings.items() for a in ("--set-string", f"{k}={v}")]
    return args + [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


async def assert_issued(release: Release, coupon_id: str, issued: int) -> None:
    """``coupon-issuer verify`` in the cluster: clean, ``issued`` coupons with their rows, no user
    twice."""
    report = await asyncio.to_thread(release.verify, coupon_id)
    assert report["ok"] is True and report["violations"] == [], report
    (figures,) = report["coupons"]
    assert figures["issued_quantity"] == figures["issued_rows"] == issued, figures
    assert figures["double_issued"] == 0, figures


async def answers(stack: ServiceStack, path: str) -> bool:
    assert stack.http is not None
    try:
        return (await stack.http.get(path, timeout=2)).status_code == 200
    except httpx.TransportError:
        return False


@asynccontextmanager
async def installed(
    node: Node, servers: PodServers, home: Path, partitions: int, **values: Any
) -> AsyncIterator[Release]:
    """helm install --wait into a new restricted namespace; the namespace deleted afterwards,
    once its pods are gone (their logs kept in ``home``/pods.log)."""
    base = Settings(
        kafka_bootstrap=servers.broker.bootstrap,
        database_url=servers.postgres.url,
        redis_url=servers.redis.url,
    )
    token = f"node-{uuid.uuid4().hex}"
    settings = isolated(base, "node", partitions=partitions, admin_token=token)
    values = {"kafka.partitions": partitions, **values}
    with node.plane.client() as api:
        cluster = Cluster(node.plane, api, home)
        namespace = await asyncio.to_thread(cluster.namespace, "node")
        stack: ServiceStack | None = None
        args = chart_values(settings, servers, values)
        try:
            await asyncio.to_thread(
                cluster.helm,
                *("install", NAME, CHART, "-n", namespace, "-f", PROFILE),
                *args,
                *HELM_WAIT,
            )
            path = f"/api/v1/namespaces/{namespace}/services/{NAME}-coupon-issuer-api"
            service = cluster.get(path)
            assert service is not None, path
            ip, port = service["spec"]["clusterIP"], service["spec"]["ports"][0]["port"]
            stack = ServiceStack(settings, home, service_url=f"http://{ip}:{port}")
            stack.http = httpx.AsyncClient(
                base_url=stack.base_url, timeout=30, limits=httpx.Limits(max_connections=50)
            )
            await stack.open_pool()
            # helm's --wait counts Ready pods (a Deployment may be "ready" one pod short: its
            # maxUnavailable); kube-proxy programs the Service from the EndpointSlices after.
            await wait_until(
                lambda: answers(stack, "/readyz"), 120, "the API's Service answering", interval=0.2
            )
            yield Release(cluster, namespace, settings, stack, home, args)
        finally:
            logs = cluster.kubectl(
                *("-n", namespace, "logs", "--all-containers", "--prefix", "--tail=300"),
                *("-l", f"app.kubernetes.io/instance={NAME}"),
                check=False,
            )
            (home / "pods.log").write_text(logs.stdout + logs.stderr)
            events = cluster.kubectl("-n", namespace, "get", "events", check=False)
            (home / "events.txt").write_text(events.stdout + events.stderr)
            if stack is not None:
                await stack.stop()
            cluster.delete_namespace(namespace)
            await wait_until(
                lambda: not cluster.items(f"/api/v1/namespaces/{namespace}/pods"),
                120,
                f"{namespace}'s pods to be gone",
                interval=0.5,
            )
