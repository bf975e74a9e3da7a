"""`make node-test`: the chart's pods on a real node (harness/node.py), nothing faked.

Selected only with ``-m node``; ``make test`` deselects them (the node needs root, Debian's
containerd and minutes of building). One node per session. PostgreSQL, Redis and the broker run
on the host like the other tests' servers, but on the bridge's gateway address, the one address
pods reach (the kubelet's KUBE-FIREWALL drops pod traffic to 127.0.0.0/8); nothing listens on
the machine's external interface.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.local.kafka import KafkaNode
from app.local.processes import free_port
from app.local.servers import PostgresServer, RedisServer
from harness.keda import (
    CRDS,
    KedaMetricsServer,
    KedaOperator,
    register_metrics_api,
    unregister_metrics_api,
)
from harness.node import Node
from harness.node_machine import GATEWAY, POD_CIDR
from tests import servers
from tests.images.podman import TAG, TARGETS, build, ensure_base, image_name
from tests.k8s_helpers import ROOT
from tests.kube.cluster import Cluster
from tests.markers import run_only_when_asked

HERE = Path(__file__).resolve().parent
IMAGES = ROOT / ".tools" / "node" / "images"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "node: runs the chart on a real node (make node-test)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_only_when_asked(config, items, "node", HERE)


@pytest.fixture(scope="session")
def app_archive() -> Path:
    """Every Dockerfile target built as `make image-check` builds it (layers cached), saved as
    one docker-archive for the node's containerd (what `make node-load` does)."""
    missing = [t for t in ("podman", "buildah", "containerd", "ctr") if shutil.which(t) is None]
    assert not missing, f"missing {missing}: run `make node-deps`"
    base = ensure_base()
    names = [build(target, base) for target in TARGETS]
    IMAGES.mkdir(parents=True, exist_ok=True)
    archive = IMAGES / f"app-{TAG}.tar"
    archive.unlink(missing_ok=True)
    subprocess.run(
        ["podman", "save", "-q", "-m", "--format", "docker-archive", "-o", str(archive), *names],
        check=True,
        timeout=600,
    )
    return archive


@pytest.fixture(scope="session")
def node(app_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The control plane and a Ready node; stopped at the end, and the machine checked clean."""
    node = Node(Path(tmp_path_factory.mktemp("node")), [app_archive]).start()
    print("node up, s after start:", {k: round(v, 1) for k, v in node.timings.items()})
    watched = servers.session_servers()
    watched.watch("node", node.describe_exit)
    try:
        yield node
    finally:
        watched.unwatch("node")
        node.stop()
    assert node.leftovers == [], f"the node's teardown left: {node.leftovers}"


@dataclass
class PodPostgres(PostgresServer):
    """The session's kind of PostgreSQL, on the gateway, letting the pods' range in."""

    name: str = "PostgreSQL-pods"

    @property
    def host(self) -> str:
        return GATEWAY

    def _prepare(self) -> None:
        super()._prepare()
        hba = self.data / "pg_hba.conf"
        line = f"host all all {POD_CIDR} trust\n"
        if line not in hba.read_text():
            with hba.open("a") as f:
                f.write(line)


@dataclass
class PodRedis(RedisServer):
    """On the gateway; protected mode off, which would refuse every client not on loopback (the
    gateway is reachable only from this machine and its pods)."""

    name: str = "Redis-pods"

    @property
    def host(self) -> str:
        return GATEWAY

    def _command(self) -> Sequence[str]:
        return [*super()._command(), "--protected-mode", "no"]


@dataclass
class PodServers:
    """PostgreSQL, Redis and a broker the pods reach; the broker also on loopback (its
    readiness check and the host's clients)."""

    postgres: PodPostgres
    redis: PodRedis
    broker: KafkaNode
    pod_port: int

    @property
    def pod_bootstrap(self) -> str:
        return f"{GATEWAY}:{self.pod_port}"

    @property
    def pod_database_url(self) -> str:
        """As the pods log in: as postgres (UID 10001 would be the role "coupon")."""
        return f"postgresql://postgres@{GATEWAY}:{self.postgres.port}/postgres"


@pytest.fixture(scope="session")
def pod_servers(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodServers]:
    postgres = PodPostgres(durable=False).start()
    redis = PodRedis().start()
    broker = KafkaNode(Path(tmp_path_factory.mktemp("kafka-pods")))
    pod_port = free_port()
    broker.overrides = {
        "listeners": f"PLAINTEXT://127.0.0.1:{broker.port},POD://{GATEWAY}:{pod_port},"
        f"CONTROLLER://127.0.0.1:{broker.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker.port},POD://{GATEWAY}:{pod_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,POD:PLAINTEXT,CONTROLLER:PLAINTEXT",
    }
    try:
        broker.start()
        yield PodServers(postgres, redis, broker, pod_port)
    finally:
        broker.stop()
        redis.remove()
        postgres.remove()


def app_image(target: str) -> tuple[str, str]:
    """(repository, tag) of a target's image as the chart takes it."""
    repository, tag = image_name(target).rsplit(":", 1)
    return repository, tag


@pytest.fixture(scope="module")
def keda(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KedaMetricsServer]:
    """KEDA's CRDs, operator and metrics API server; external.metrics.k8s.io Available. One for
    each module that asks, stopped with it."""
    home = Path(tmp_path_factory.mktemp("keda"))
    with node.plane.client() as api:
        Cluster(node.plane, api, home).kubectl("apply", "--server-side", "-f", CRDS)
        operator = KedaOperator(directory=home / "operator", plane=node.plane).start()
        metrics = KedaMetricsServer(
            directory=home / "metrics", plane=node.plane, operator=operator, address=GATEWAY
        )
        watched = servers.session_servers()
        try:
            metrics.start(60)
            register_metrics_api(api, metrics)
            watched.watch("keda-operator", operator.describe_exit)
            watched.watch("keda-metrics-apiserver", metrics.describe_exit)
            yield metrics
        finally:
            watched.unwatch("keda-operator")
            watched.unwatch("keda-metrics-apiserver")
            unregister_metrics_api(api)
            metrics.stop()
            operator.stop()
