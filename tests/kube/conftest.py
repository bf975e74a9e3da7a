"""The session's Kubernetes control plane (harness/kube.py), started once for tests/kube."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.kube import ControlPlane
from tests import servers
from tests.kube.cluster import Cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """etcd + kube-apiserver + kube-controller-manager, with the CRDs the chart needs."""
    directory = Path(tmp_path_factory.mktemp("kube"))
    plane = ControlPlane(directory).start()
    watched = servers.session_servers()
    watched.watch("kube", plane.describe_exit)
    try:
        with plane.client() as api:
            cluster = Cluster(plane, api, directory / "helm")
            cluster.install_crds()
            yield cluster
    finally:
        watched.unwatch("kube")
        plane.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace of the test's own under the restricted Pod Security Standard."""
    name = cluster.namespace()
    yield name
    cluster.delete_namespace(name)
