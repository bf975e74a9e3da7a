"""``kubectl apply --server-side -k k8s/`` (docs/deploy.md section 4) on a real API server: every
object accepted under the restricted Pod Security Standard, every pod admitted, and a second apply
(and ``kubectl diff``) changes nothing."""

from __future__ import annotations

import json

from harness import wait_until_blocking
from tests.k8s_helpers import ROOT
from tests.kube.cluster import RESTRICTED, Cluster, deployments, owned_by, replica_sets

K8S = ROOT / "k8s"
NAMESPACE = "coupons"  # what k8s/kustomization.yaml puts everything in


def versions(cluster: Cluster) -> dict[tuple[str, str], str]:
    got = json.loads(cluster.kubectl("get", "-k", K8S, "-o", "json").stdout)
    return {
        (o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"] for o in got["items"]
    }


def pods_created(cluster: Cluster) -> bool:
    sets = replica_sets(cluster, NAMESPACE)
    return all(
        rs["status"].get("replicas", 0) == rs["spec"]["replicas"]
        for deployment in deployments(cluster, NAMESPACE)
        for rs in owned_by(sets, deployment) or [{"status": {}, "spec": {"replicas": -1}}]
    )


def test_server_side_apply_of_k8s_is_accepted_and_idempotent(cluster: Cluster) -> None:
    body = {"metadata": {"name": NAMESPACE, "labels": RESTRICTED}}
    cluster.api.post("/api/v1/namespaces", json=body).raise_for_status()
    try:
        applied = cluster.kubectl("apply", "--server-side", "-k", K8S)
        assert "PodSecurity" not in applied.stderr, applied.stderr
        wait_until_blocking(lambda: pods_created(cluster), 60, "every Deployment's pods created")
        assert cluster.items(f"/api/v1/namespaces/{NAMESPACE}/pods")  # the Job's too, Pending
        assert cluster.events(NAMESPACE, reason="FailedCreate") == []
        first = versions(cluster)
        kinds = {kind for kind, _ in first}
        assert {"Deployment", "ConsumerAutoscaler", "Secret", "Job", "Role"} <= kinds, kinds

        cluster.kubectl("apply", "--server-side", "-k", K8S)
        assert versions(cluster) == first  # nothing written the second time
        diff = cluster.kubectl("diff", "--server-side", "-k", K8S, check=False)
        assert diff.returncode == 0, diff.stdout + diff.stderr
    finally:
        cluster.delete_namespace(NAMESPACE)
