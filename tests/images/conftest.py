"""`make image-check`: the Dockerfile's images built with buildah, the chart's pods run by podman.

Selected only with ``-m images`` (``make image-check``); ``make test`` deselects them. The pods run
with host networking against the session's PostgreSQL, Redis and broker (tests/servers.py), on
their own schema, Redis prefix, topics, consumer group and ports (tests/stack.isolated_settings).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
import yaml

from app.config import Settings
from app.local.processes import free_port
from harness import wait_until
from tests.images import pods
from tests.images.podman import INSTANCE, TAG, TARGETS, build, ensure_base, podman
from tests.k8s_helpers import CHART, helm_template, load_docs
from tests.markers import run_only_when_asked
from tests.servers import database_url_as
from tests.stack import Stack, isolated_settings

HERE = Path(__file__).resolve().parent
TOOLS = ("podman", "buildah", "runc", "debootstrap", "catatonit")
PODS_PROFILE = CHART / "ci" / "podman-values.yaml"
ADMIN_TOKEN = f"image-check-{uuid.uuid4().hex}"
CONSUMERS = 2


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "images: builds images and runs pods (make image-check)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_only_when_asked(config, items, "images", HERE)


@dataclass
class Built:
    images: dict[str, str]
    seconds: float


@pytest.fixture(scope="session")
def built() -> Built:
    """Every Dockerfile target, built against the stand-in base (make image-deps installs tools)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    assert not missing, f"missing {missing}: run `make image-deps`"
    started = time.monotonic()
    base = ensure_base()
    images = {target: build(target, base) for target in TARGETS}
    # Layers a later build replaced pile up on a long-lived machine: drop those unused for a week.
    podman("image", "prune", "--force", "--filter", "until=168h")
    return Built(images, time.monotonic() - started)


@dataclass
class Release:
    """The chart's pods running under podman, and a Stack's helpers pointed at them."""

    settings: Settings
    stack: Stack
    job: dict[str, Any]
    played: list[dict[str, Any]]
    consumer_ports: list[int]
    log_dir: Path
    files: list[Path] = field(default_factory=list)

    def deployment(self, suffix: str) -> dict[str, Any]:
        found = [
            d
            for d in self.played
            if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(suffix)
        ]
        assert len(found) == 1, suffix
        return found[0]

    def container(self, suffix: str) -> str:
        doc = self.deployment(suffix)
        return pods.container_name(doc, doc["spec"]["template"]["spec"]["containers"][0]["name"])

    def consumer_containers(self) -> list[str]:
        return [self.container(f"-consumer-{i}") for i in range(len(self.consumer_ports))]


def chart_values(settings: Settings, lag_port: int) -> list[str]:
    """--set arguments isolating this release (the rest comes from ci/podman-values.yaml)."""
    strings = {
        "image.tag": TAG,
        "fullnameOverride": f"image-check-{INSTANCE}",
        "kafka.bootstrap": settings.kafka_bootstrap,
        "kafka.topic": settings.topic,
        "kafka.dlqTopic": settings.dlq_topic,
        "kafka.consumerGroup": settings.consumer_group,
        "database.schema": settings.db_schema,
        "redis.prefix": settings.redis_prefix,
        "database.url": settings.database_url,
        "redis.url": settings.redis_url,
        "auth.adminToken": ADMIN_TOKEN,
    }
    numbers = {
        "api.port": settings.api_port,
        "consumer.metricsPort": settings.consumer_metrics_port,
        "lagExporter.port": lag_port,
    }
    return [a for k, v in strings.items() for a in ("--set-string", f"{k}={v}")] + [
        a for k, n in numbers.items() for a in ("--set", f"{k}={n}")
    ]


def isolated(bootstrap: str) -> Settings:
    """Settings of this release, on the session's servers: the pods' DSN names its user (UID
    10001 would log in as coupon)."""
    profile = yaml.safe_load(PODS_PROFILE.read_text())
    return isolated_settings(
        bootstrap,
        database_url=database_url_as("postgres"),
        partitions=profile["kafka"]["partitions"],
        admin_token=ADMIN_TOKEN,
    )


def play(path: Path, docs: list[dict[str, Any]]) -> None:
    """``kube play`` the docs; pods of the same names left by an interrupted run are removed first."""
    for doc in docs:
        if doc["kind"] in {"Deployment", "Pod"}:
            podman("pod", "rm", "--force", "--ignore", pods.pod_name(doc))
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    podman("kube", "play", "--network", "host", str(path))


async def wait_exited(container: str, timeout: float) -> int:
    """The exit code of a container once it has stopped."""

    async def exited() -> int | None:
        state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", container)
        status, code = state.stdout.split()
        return int(code) + 1 if status in {"exited", "stopped"} else None

    return await wait_until(exited, timeout, f"{container} to exit", interval=0.5) - 1


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def release(
    built: Built, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Release]:
    """helm template → Secrets inlined → the hook Job as a Pod, then the Deployments, played."""
    settings = isolated(kafka_bootstrap)
    lag_port = free_port()
    ports = [settings.consumer_metrics_port, *(free_port() for _ in range(CONSUMERS - 1))]
    docs = load_docs(helm_template("-f", str(PODS_PROFILE), *chart_values(settings, lag_port)))
    rendered = pods.for_podman(docs)
    job = pods.job_as_pod(next(d for d in rendered if d["kind"] == "Job"))
    config = [d for d in rendered if d["kind"] == "ConfigMap"]
    deployments = [d for d in rendered if d["kind"] == "Deployment"]
    consumer = next(d for d in deployments if d["metadata"]["name"].endswith("-consumer"))
    played = [
        *config,
        *[pods.host_network(d) for d in deployments if d is not consumer],
        *[
            d if d["kind"] == "ConfigMap" else pods.host_network(d)
            for d in pods.consumer_replicas(rendered, consumer, ports)
        ],
    ]
    log_dir = tmp_path_factory.mktemp("pods")
    stack = Stack(settings, log_dir)
    rel = Release(settings, stack, job, played, ports, log_dir)
    rel.files = [log_dir / "job.yaml", log_dir / "release.yaml"]
    try:
        play(rel.files[0], [job])
        for c in job["spec"]["containers"]:
            code = await wait_exited(pods.container_name(job, c["name"]), 120)
            assert code == 0, podman("logs", pods.container_name(job, c["name"])).stdout
        play(rel.files[1], played)
        stack.consumer_ports = ports
        stack.http = httpx.AsyncClient(
            base_url=stack.base_url, timeout=30, limits=httpx.Limits(max_connections=50)
        )
        await stack.open_pool()
        yield rel
    finally:
        for name in (
            [pods.container_name(job, c["name"]) for c in job["spec"]["containers"]]
            + [rel.container(f"-{c}") for c in ("api", "lag-exporter")]
            + rel.consumer_containers()
        ):
            logs = podman("logs", name, check=False)
            (log_dir / f"{name}.log").write_text(logs.stdout + logs.stderr)
        for path in reversed(rel.files):
            if path.exists():
                podman("kube", "down", str(path), check=False)
        await stack.stop()
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        finally:
            await conn.close()
