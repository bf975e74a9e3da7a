"""The control plane itself enforces what the chart tests rely on: RBAC for service-account
tokens from the TokenRequest API, and the restricted Pod Security Standard (a warning at apply
time, FailedCreate on the ReplicaSet). If these failed open, every later check would pass."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from harness import wait_until_blocking
from tests.kube.cluster import Cluster, owned_by, replica_sets

# A Deployment as people write it before reading the Pod Security Standards: root, no seccomp.
BARE_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "bare"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "bare"}},
        "template": {
            "metadata": {"labels": {"app": "bare"}},
            "spec": {"containers": [{"name": "c", "image": "registry.example/bare:1"}]},
        },
    },
}


def test_a_token_request_token_authenticates_as_its_service_account_and_rbac_denies(
    cluster: Cluster, namespace: str
) -> None:
    token = cluster.plane.request_token(namespace, "default", seconds=600)
    with cluster.plane.client(token) as api:
        review = api.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert review.status_code == 201, review.text
        user = review.json()["status"]["userInfo"]
        assert user["username"] == f"system:serviceaccount:{namespace}:default"
        assert f"system:serviceaccounts:{namespace}" in user["groups"]
        assert api.get(f"/api/v1/namespaces/{namespace}/pods").status_code == 403
    with cluster.plane.client("not-a-token") as api:
        assert api.get(f"/api/v1/namespaces/{namespace}/pods").status_code == 401


def test_the_restricted_namespace_warns_and_refuses_a_non_compliant_pod(
    cluster: Cluster, namespace: str
) -> None:
    applied = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(BARE_DEPLOYMENT)
    )
    assert 'would violate PodSecurity "restricted:latest"' in applied.stderr
    deployment = cluster.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/bare")
    assert deployment is not None
    rs = wait_until_blocking(
        lambda: owned_by(replica_sets(cluster, namespace), deployment), 60, "a ReplicaSet"
    )[0]
    refused = wait_until_blocking(
        lambda: cluster.events(
            namespace, reason="FailedCreate", involvedObject__name=rs["metadata"]["name"]
        ),
        60,
        "FailedCreate on the ReplicaSet",
    )
    assert "violates PodSecurity" in refused[0]["message"]
    assert cluster.items(f"/api/v1/namespaces/{namespace}/pods") == []


def test_helm_shows_the_api_servers_pod_security_warning(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """What test_helm asserts the absence of is what helm prints for a non-compliant chart."""
    chart = tmp_path / "bare"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: bare\nversion: 0.1.0\n")
    (chart / "templates" / "deployment.yaml").write_text(yaml.safe_dump(BARE_DEPLOYMENT))
    installed = cluster.helm("install", "bare", chart, "-n", namespace)
    assert "would violate PodSecurity" in installed.stderr  # klog quotes it: \"restricted:latest\"
