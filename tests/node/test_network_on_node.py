"""The node's network stays on this machine: a pod that tries to leave is dropped by our rules,
and what pods must reach (the API server, the test servers) is on the bridge's gateway."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.node import Node
from harness.node_machine import GATEWAY, OWN_CHAIN, external_interface, sh
from harness.wait import wait_until_blocking
from tests.kube.cluster import Cluster
from tests.node.conftest import app_image

pytestmark = pytest.mark.node

# Run in a pod: an address beyond the machine (the external interface's gateway and a public
# one), then the API server on the bridge's gateway; one line of JSON.
PROBE = """
import json, socket, sys
def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False
def resolve(name):
    try:
        return socket.gethostbyname(name)
    except OSError:
        return None
outside = {h: reach(h, 443) for h in sys.argv[1].split(",")}
print(json.dumps({"outside": outside, "gateway": reach(sys.argv[2], int(sys.argv[3])),
                  "service": reach("kubernetes.default.svc", 443),
                  "names": {n: resolve(n) for n in ("kubernetes.default.svc", "example.com")},
                  "resolv": open("/etc/resolv.conf").read()}))
"""


@pytest.fixture
def cluster(node: Node, tmp_path: Path) -> Iterator[Cluster]:
    with node.plane.client() as api:
        yield Cluster(node.plane, api, tmp_path / "helm")


def forward_drops() -> int:
    """Packets our FORWARD DROP on the external interface has dropped so far."""
    listing = sh("iptables", "-t", "mangle", "-L", f"{OWN_CHAIN}-FORW", "-v", "-x", "-n")
    ext = external_interface()
    return sum(
        int(line.split()[0])
        for line in listing.splitlines()[2:]
        if line.split()[2] == "DROP" and ext in line.split()
    )


def test_a_pod_cannot_leave_the_machine(node: Node, cluster: Cluster) -> None:
    namespace = cluster.namespace("net")
    outside = ",".join([sh("ip", "-4", "route", "show", "default").split()[2], "1.1.1.1"])
    api_port = str(node.plane.apiserver.port)
    repository, tag = app_image("runtime")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"probe-{uuid.uuid4().hex[:6]}", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": f"{repository}:{tag}",
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", PROBE, outside, GATEWAY, api_port],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    dropped_before = forward_drops()
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
        name = pod["metadata"]["name"]  # type: ignore[index]
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        wait_until_blocking(
            lambda: (cluster.get(path) or {}).get("status", {}).get("phase") == "Succeeded",
            60,
            "the probe pod to finish",
            interval=0.5,
        )
        report = json.loads(cluster.kubectl("-n", namespace, "logs", name).stdout)
    finally:
        cluster.delete_namespace(namespace)
    assert report["gateway"] is True, report  # the API server, on the bridge's gateway
    assert not any(report["outside"].values()), report
    # CoreDNS on the gateway knows the cluster's names and forwards nothing.
    servers = [
        line.split()[1] for line in report["resolv"].splitlines() if line.startswith("nameserver")
    ]
    assert servers == [GATEWAY], report
    assert report["names"] == {"kubernetes.default.svc": "10.96.0.1", "example.com": None}, report
    assert report["service"] is True, report  # the API server through its Service (kube-proxy)
    assert forward_drops() > dropped_before, "our FORWARD DROP saw none of the pod's attempts"
