"""The kind workflow's steps (.github/workflows/kind.yml) as a user runs them, on a real node.

`make node-dev-images` builds k8s/dev's Kafka, PostgreSQL and Redis from Debian packages and
imports them into the session's node; `make kind-deploy` (KUBECONFIG at the node) applies
k8s/dev-node (k8s/dev with those images) into a namespace enforcing the restricted Pod Security
Standard and helm-installs the chart with ci/kind-values.yaml and the images `make image-check`
built; `make kind-smoke` sells through the API's Service (port-forward) while the operator
scales the consumers up from zero. Nothing is done by hand: the kubelet runs the migrations hook
Job and every probe; afterwards `coupon-issuer verify` runs in the API's container against the
in-cluster PostgreSQL and Kafka.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.local.processes import free_port
from harness import wait_until_blocking
from harness.node import NODE_NAME, Node
from tests.images.podman import TAG
from tests.k8s_helpers import ROOT
from tests.kube.cluster import Cluster
from tests.node.dev_images import overlay_images
from tests.node.events import failures, probe_failures_once_ready

pytestmark = pytest.mark.node

NAMESPACE = "coupons-kind"
RELEASE = "coupon-issuer"
# What kind-deploy and kind-smoke are given on the node (a kind user gives only IMAGE_TAG).
MAKE_VARIABLES = {
    "DEV_KUSTOMIZE": "k8s/dev-node",
    "IMAGE_REPO": "localhost/coupon-issuer",
    "IMAGE_TAG": TAG,
    "K8S_NAMESPACE": NAMESPACE,
}


@dataclass
class Deployed:
    cluster: Cluster
    seconds: dict[str, float]
    smoke_output: str
    pods: list[dict[str, Any]]  # as kind-smoke left them (before the consumers scale back in)
    ready_since: dict[str, str]  # pod -> when it became Ready, after kind-deploy or kind-smoke

    def kubectl(self, *args: str) -> str:
        return self.cluster.kubectl("-n", NAMESPACE, *args).stdout


def make(cluster: Cluster, target: str, timeout: float, **extra: str) -> tuple[str, float]:
    """``make TARGET`` from the repository's root, as a user types it; (output, seconds)."""
    variables = [f"{k}={v}" for k, v in {**MAKE_VARIABLES, **extra}.items()]
    started = time.monotonic()
    done = subprocess.run(
        ["make", "-o", ".venv/.installed", target, *variables],
        cwd=ROOT,
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        state = cluster.kubectl("-n", NAMESPACE, "get", "pods,events", "-o", "wide", check=False)
        raise AssertionError(f"make {target} -> {done.returncode}\n{output}\n{state.stdout}")
    return output, time.monotonic() - started


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def ready_since(pods: list[dict[str, Any]]) -> dict[str, str]:
    return {
        p["metadata"]["name"]: c["lastTransitionTime"]
        for p in pods
        for c in p["status"]["conditions"]
        if c["type"] == "Ready"
    }


def settled_pods(cluster: Cluster) -> list[dict[str, Any]] | None:
    """The namespace's pods once every one not being deleted is Ready (the operator may still be
    starting a consumer it asked for during the sale, or stopping one after it)."""
    pods = cluster.items(f"/api/v1/namespaces/{NAMESPACE}/pods")
    current = [p for p in pods if "deletionTimestamp" not in p["metadata"]]
    return current if current and all(map(ready, current)) else None


@pytest.fixture(scope="module")
def deployed(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    home = Path(tmp_path_factory.mktemp("kind-steps"))
    with node.plane.client() as api:
        cluster = Cluster(node.plane, api, home)
        seconds: dict[str, float] = {}
        try:
            _, seconds["node-dev-images"] = make(cluster, "node-dev-images", 1800)
            _, seconds["kind-deploy"] = make(cluster, "kind-deploy", 900)
            # The first consumer pod is gone after the sale (scaled to zero before it): when
            # each pod became Ready is taken after each step.
            after_deploy = wait_until_blocking(
                lambda: settled_pods(cluster), 120, "every pod kind-deploy made to be Ready"
            )
            smoke, seconds["kind-smoke"] = make(cluster, "kind-smoke", 600, PORT=str(free_port()))
            pods = wait_until_blocking(
                lambda: settled_pods(cluster), 120, "every pod kind-smoke left to be Ready"
            )
            print(smoke)
            print("kind steps on the node, s:", {k: round(v, 1) for k, v in seconds.items()})
            yield Deployed(cluster, seconds, smoke, pods, ready_since(after_deploy + pods))
        finally:
            logs = cluster.kubectl(
                *("-n", NAMESPACE, "logs", "--all-containers", "--prefix", "--tail=200"),
                *("-l", "app.kubernetes.io/name"),
                check=False,
            )
            (home / "pods.log").write_text(logs.stdout + logs.stderr)
            cluster.delete_namespace(NAMESPACE)
            wait_until_blocking(
                lambda: not cluster.items(f"/api/v1/namespaces/{NAMESPACE}/pods"),
                120,
                f"{NAMESPACE}'s pods to be gone",
                interval=0.5,
            )


def test_the_namespace_enforces_restricted(deployed: Deployed) -> None:
    namespace = deployed.cluster.get(f"/api/v1/namespaces/{NAMESPACE}")
    assert namespace is not None
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted", labels


def test_every_pod_ran_on_the_node_and_is_ready_through_its_probes(deployed: Deployed) -> None:
    pods = {p["metadata"]["name"]: p for p in deployed.pods}
    components = {
        p["metadata"]["labels"].get("app.kubernetes.io/component")
        or p["metadata"]["labels"]["app.kubernetes.io/name"]
        for p in pods.values()
    }
    expected = {"kafka", "postgres", "redis", "api", "consumer", "operator"}
    assert expected <= components, components
    for name, pod in pods.items():
        assert pod["spec"]["nodeName"] == NODE_NAME, name
        conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert conditions.get("Ready") == "True", (name, conditions)
        for container in pod["spec"]["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, (
                name,
                container["name"],
            )
        for status in pod["status"]["containerStatuses"]:
            assert status["ready"] and status["restartCount"] == 0, (name, status)


def test_the_dev_dependencies_run_the_images_built_here(deployed: Deployed) -> None:
    dev = overlay_images()
    running = {
        p["metadata"]["labels"]["app.kubernetes.io/name"]: p["spec"]["containers"][0]["image"]
        for p in deployed.pods
        if p["metadata"]["labels"]["app.kubernetes.io/name"] in dev
    }
    assert running == dev, running


def test_the_migrations_hook_job_ran_on_the_node(deployed: Deployed) -> None:
    """helm waited for it and deleted it (hook-succeeded); its Events stay: the Job controller's
    Completed, and the kubelet's Started for the Job's pod."""
    events = deployed.cluster.events(NAMESPACE)
    job = [e for e in events if e["involvedObject"]["name"] == f"{RELEASE}-migrations"]
    assert any(e["reason"] == "Completed" for e in job), [(e["reason"], e["message"]) for e in job]
    started = [
        e
        for e in events
        if e["reason"] == "Started"
        and e["involvedObject"]["name"].startswith(f"{RELEASE}-migrations-")
        and e["source"].get("component") == "kubelet"
    ]
    assert started, [(e["involvedObject"]["name"], e["reason"]) for e in events]


def test_no_failure_events(deployed: Deployed) -> None:
    events = deployed.cluster.events(NAMESPACE)
    assert failures(events) == []
    # A startup or readiness probe may fail while its pod starts (Kafka's port opens seconds
    # after its JVM, the API waits for its dependencies): that is their job. After a pod is
    # Ready none may fail, and a liveness probe never.
    ready_since = deployed.ready_since
    assert probe_failures_once_ready(events, ready_since) == [], ready_since


def test_the_smoke_sale_issued_every_coupon_once(deployed: Deployed) -> None:
    """kind-smoke sold through the Service and saw the consumers scale up from zero; `verify`,
    in the API's container, finds the in-cluster ledger and topic consistent."""
    assert "idle consumers scaled to zero" in deployed.smoke_output, deployed.smoke_output
    assert re.search(r"OK: 50 issued, consumers scaled to [1-9]", deployed.smoke_output), (
        deployed.smoke_output
    )
    found = re.search(r"\[smoke\] coupon (\S+) ", deployed.smoke_output)
    assert found is not None, deployed.smoke_output
    report = json.loads(
        deployed.kubectl(
            *("exec", f"deploy/{RELEASE}-api", "--"),
            *("coupon-issuer", "verify", "--json", "--coupon", found.group(1)),
        )
    )
    assert report["ok"] is True and report["violations"] == [], report
    (figures,) = report["coupons"]
    assert figures["issued_quantity"] == figures["issued_rows"] == 50, figures
    assert figures["double_issued"] == 0, figures
