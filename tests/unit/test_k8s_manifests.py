"""k8s/: generated plain manifests in sync with the chart, kustomize builds, dev dependencies, skaffold."""

from __future__ import annotations

import importlib.util
import re
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from tests.k8s_helpers import (
    CHART,
    KUBE_VERSIONS,
    ROOT,
    by_kind,
    load_docs,
    one,
    run,
    tool,
)

K8S = ROOT / "k8s"


def kustomize(path: str) -> list[dict[str, Any]]:
    proc = run([tool("kubectl"), "kustomize", ROOT / path])
    assert proc.returncode == 0, proc.stderr
    return load_docs(proc.stdout)


@pytest.fixture(scope="module")
def app_docs() -> list[dict[str, Any]]:
    return kustomize("k8s")


@pytest.fixture(scope="module")
def dev_docs() -> list[dict[str, Any]]:
    return kustomize("k8s/dev")


def test_generated_manifests_are_in_sync_with_the_chart() -> None:
    spec = importlib.util.spec_from_file_location("render_k8s", ROOT / "scripts" / "render_k8s.py")
    assert spec is not None and spec.loader is not None
    render_k8s = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_k8s)
    stale = [
        str(path.relative_to(ROOT))
        for path, text in render_k8s.render().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"{stale} differ from the chart: run `make k8s-manifests`"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("which", ["k8s", "k8s/dev"])
def test_kustomize_output_passes_kubernetes_validate_strict(
    app_docs: list[dict[str, Any]], dev_docs: list[dict[str, Any]], which: str, kube_version: str
) -> None:
    errors = []
    for doc in app_docs if which == "k8s" else dev_docs:
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if doc["kind"] != "ConsumerAutoscaler":  # validated against the CRD in test_chart
                errors.append(f"{doc['kind']}: no schema")
        except kubernetes_validate.ValidationError as e:
            errors.append(
                f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}"
            )
    assert not errors, "\n".join(errors)


def test_app_manifests_are_complete(app_docs: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in app_docs}
    assert {
        "CustomResourceDefinition",
        "ConsumerAutoscaler",
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "Job",
        "Role",
        "RoleBinding",
    } <= kinds
    assert {
        d["metadata"]["namespace"] for d in app_docs if d["kind"] != "CustomResourceDefinition"
    } == {"coupons"}
    secret = one(app_docs, "Secret")
    name = secret["metadata"]["name"]
    assert re.fullmatch(r"coupon-issuer-secrets-[a-z0-9]{10}", name), (
        "generated, content-hashed Secret"
    )
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for d in app_docs
        if d["kind"] in {"Deployment", "Job"}
        for c in d["spec"]["template"]["spec"].get("initContainers", [])
        + d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {name}, "kustomize must rewrite every secretKeyRef to the hashed Secret"


def _env_file(path: str) -> dict[str, str]:
    lines = (ROOT / path).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_dev_dependencies_match_the_chart_defaults(dev_docs: list[dict[str, Any]]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    services = {
        d["metadata"]["name"]: d["spec"]["ports"][0]["port"] for d in by_kind(dev_docs, "Service")
    }
    host, port = values["kafka"]["bootstrap"].split(":")
    assert services[host] == int(port)
    for url in (
        values["database"]["url"],
        values["redis"]["url"],
        *_env_file("k8s/dev-secrets.env").values(),
    ):
        parsed = urlparse(url)
        if parsed.scheme:
            assert services[parsed.hostname] == parsed.port, url
    literals = dict(
        item.split("=", 1)
        for gen in yaml.safe_load((K8S / "dev" / "kustomization.yaml").read_text())[
            "secretGenerator"
        ]
        for item in gen["literals"]
    )
    for url in (values["database"]["url"], _env_file("k8s/dev-secrets.env")["COUPON_DATABASE_URL"]):
        db = urlparse(url)
        assert (db.username, db.password, db.path.lstrip("/")) == (
            literals["username"],
            literals["password"],
            literals["database"],
        ), url


def test_dev_kafka_is_single_node_kraft(dev_docs: list[dict[str, Any]]) -> None:
    pod = one(dev_docs, "Deployment", "kafka")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert pod["enableServiceLinks"] is False, "KAFKA_PORT from service links breaks the image"
    for d in by_kind(dev_docs, "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            assert not c["image"].endswith(":latest") and ":" in c["image"], c["image"]
            assert "readinessProbe" in c, d["metadata"]["name"]


def test_skaffold_builds_dockerfile_targets_and_sets_chart_values() -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    dockerfile_targets = set(
        re.findall(r"^FROM \S+ AS (\S+)", (ROOT / "Dockerfile").read_text(), flags=re.M)
    )
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    for artifact in artifacts.values():
        assert artifact["docker"]["target"] in dockerfile_targets
    release = config["deploy"]["helm"]["releases"][0]
    assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key, template in release["setValueTemplates"].items():
        node = values
        for part in key.split("."):
            assert part in node, f"skaffold sets unknown value {key}"
            node = node[part]
        for name in re.findall(r"IMAGE_(?:REPO|TAG)_(\w+)", template):
            assert name in {re.sub(r"[^A-Za-z0-9]", "_", a) for a in artifacts}, template
    dev = next(p for p in config["profiles"] if p["name"] == "dev")
    for path in dev["manifests"]["kustomize"]["paths"]:
        assert (ROOT / path / "kustomization.yaml").is_file()


def test_dev_kafka_is_the_version_we_test(dev_docs: list[dict[str, Any]]) -> None:
    from app.local.kafka_jars import kafka_version

    pod = one(dev_docs, "Deployment", "kafka")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"apache/kafka:{kafka_version()}"


def test_dev_node_overlay_changes_only_the_images(dev_docs: list[dict[str, Any]]) -> None:
    """k8s/dev-node is k8s/dev with the images k8s/dev/images builds (one target each)."""
    from tests.node.dev_images import overlay_images

    ours = overlay_images()
    recipe = (K8S / "dev" / "images" / "Containerfile").read_text()
    assert set(ours) <= set(re.findall(r"^FROM \S+ AS (\S+)", recipe, flags=re.M)), ours
    expected = yaml.safe_load(yaml.safe_dump(dev_docs))
    for d in by_kind(expected, "Deployment"):
        container = d["spec"]["template"]["spec"]["containers"][0]
        container["image"] = ours[container["image"].split(":")[0].rsplit("/", 1)[-1]]
    assert kustomize("k8s/dev-node") == expected


def _dev_image_module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, K8S / "dev" / "images" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dev_kafka_image_reads_env_as_apache_kafkas_image_does() -> None:
    entrypoint = _dev_image_module("kafka-entrypoint")
    env = {
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT",
        "KAFKA_LOG_DIRS": "/var/lib/kafka/data",
        "KAFKA_SOME__UNDERSCORED___DASHED": "x",
        "KAFKA_HEAP_OPTS": "-Xmx512m",  # the JVM's, not the broker's
        "CLUSTER_ID": "abc",
        "PATH": "/usr/bin",
    }
    assert entrypoint.server_properties(env) == {
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT",
        "log.dirs": "/var/lib/kafka/data",
        "some_underscored-dashed": "x",
    }
    # Without any, apache/kafka's single-node KRaft defaults.
    defaults = entrypoint.server_properties({"KAFKA_HEAP_OPTS": "-Xmx512m"})
    assert defaults["process.roles"] == "broker,controller"
