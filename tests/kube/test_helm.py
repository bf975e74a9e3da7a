"""helm install / upgrade / rollback / uninstall of the chart, every CI profile, on a real API
server, in a namespace that enforces the restricted Pod Security Standard.

What the API server decides here and nothing before it did: the CRDs and every rendered object
are accepted (schemas, defaults, the Prometheus Operator and KEDA kinds against their generated
CRDs), the pods of every Deployment and of the migrations hook are admitted under ``restricted``
(no warning, no FailedCreate), helm's hook ordering and deletion policy, a changed value rolls
every Deployment, a rollback returns to the first ReplicaSets, and an uninstall leaves nothing
but the CRD. Pods stay Pending (no kubelet); the migrations hook's pod is marked Succeeded by the
test (see ``job_pods_succeed``), which is all helm waits for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import wait_until_blocking
from tests.k8s_helpers import CHART, PROFILES, RELEASE, profile_args, render
from tests.kube.cluster import Cluster, deployments, job_pods_succeed, owned_by, replica_sets

REVISION = "deployment.kubernetes.io/revision"
# Left in a namespace whatever was installed in it: made by the control plane itself.
NAMESPACE_DEFAULTS = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}


def assert_no_pod_security_warning(output: str) -> None:
    assert "PodSecurity" not in output and "violate" not in output, output


def current_replica_sets(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]] | None:
    """Deployment name -> the ReplicaSet of its current revision, once every one has created
    all its pods (None until then)."""
    sets = replica_sets(cluster, namespace)
    found: dict[str, dict[str, Any]] = {}
    for deployment in deployments(cluster, namespace):
        revision = deployment["metadata"].get("annotations", {}).get(REVISION)
        current = [
            rs
            for rs in owned_by(sets, deployment)
            if rs["metadata"].get("annotations", {}).get(REVISION) == revision
        ]
        if not current or current[0]["status"].get("replicas", 0) != current[0]["spec"]["replicas"]:
            return None
        found[deployment["metadata"]["name"]] = current[0]
    return found


def rolled_to(cluster: Cluster, namespace: str, revision: str) -> dict[str, str]:
    """Wait until every Deployment is at ``revision`` with its pods created; name -> RS name."""

    def at_revision() -> dict[str, str] | None:
        current = current_replica_sets(cluster, namespace)
        if current is None:
            return None
        revisions = {rs["metadata"]["annotations"][REVISION] for rs in current.values()}
        if revisions != {revision}:
            return None
        return {name: rs["metadata"]["name"] for name, rs in current.items()}

    return wait_until_blocking(at_revision, 90, f"every Deployment at revision {revision}")


@pytest.fixture(scope="module")
def namespaced_kinds(cluster: Cluster) -> str:
    """Every namespaced kind the API server serves (CRDs included) but Events, for ``get``."""
    listed = cluster.kubectl("api-resources", "--namespaced", "--verbs=list", "-o", "name")
    return ",".join(k for k in listed.stdout.split() if k.split(".")[0] != "events")


def left_in(cluster: Cluster, namespace: str, kinds: str) -> list[tuple[str, str]]:
    """Every object in ``namespace`` but Events and what the control plane put there itself."""
    got = cluster.kubectl("get", kinds, "-n", namespace, "-o", "json")
    objects = [(o["kind"], o["metadata"]["name"]) for o in json.loads(got.stdout)["items"]]
    return [o for o in objects if o not in NAMESPACE_DEFAULTS]


def failed_creates(cluster: Cluster, namespace: str) -> list[str]:
    return [e["message"] for e in cluster.events(namespace, reason="FailedCreate")]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_install_upgrade_rollback_uninstall_under_restricted_pod_security(
    cluster: Cluster, namespace: str, namespaced_kinds: str, profile: str
) -> None:
    args: list[str | Path] = [
        RELEASE,
        CHART,
        "-n",
        namespace,
        *profile_args(profile),
        "--timeout",
        "120s",
    ]
    rendered = render(profile)
    hooked = any(d["kind"] == "Job" for d in rendered)
    expected = {d["metadata"]["name"] for d in rendered if d["kind"] == "Deployment"}

    with job_pods_succeed(cluster, namespace) as finished:
        installed = cluster.helm("install", *args)
    assert_no_pod_security_warning(installed.stdout + installed.stderr)
    assert len(finished) == hooked  # the migrations hook's pod was admitted and ran first
    first = rolled_to(cluster, namespace, "1")
    assert set(first) == expected
    # hook-delete-policy hook-succeeded: the Job and its Secret are gone once it succeeded.
    assert cluster.items(f"/apis/batch/v1/namespaces/{namespace}/jobs") == []
    assert failed_creates(cluster, namespace) == []

    with job_pods_succeed(cluster, namespace) as finished:
        upgraded = cluster.helm("upgrade", *args, "--set", "config.logLevel=DEBUG")
    assert_no_pod_security_warning(upgraded.stdout + upgraded.stderr)
    assert len(finished) == hooked  # pre-upgrade: the migrations run again
    second = rolled_to(cluster, namespace, "2")  # the config checksum rolled every Deployment
    assert all(second[name] != first[name] for name in expected), (first, second)

    cluster.helm("rollback", RELEASE, "1", "-n", namespace, "--timeout", "120s")
    assert rolled_to(cluster, namespace, "3") == first  # the first ReplicaSets are back
    history = cluster.helm("history", RELEASE, "-n", namespace, "-o", "json").stdout
    assert [r["status"] for r in json.loads(history)] == [
        "superseded",
        "superseded",
        "deployed",
    ]
    assert failed_creates(cluster, namespace) == []

    cluster.helm("uninstall", RELEASE, "-n", namespace, "--timeout", "120s")
    wait_until_blocking(
        lambda: not left_in(cluster, namespace, namespaced_kinds), 60, "an empty namespace"
    )
    # What the chart documents as kept: the CRD (helm never deletes crds/).
    assert cluster.get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/consumerautoscalers.coupons.example.com"
    )
