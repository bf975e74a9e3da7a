"""The pure transforms `make image-check` applies to the rendered chart before `podman kube play`."""

from __future__ import annotations

import base64
import copy

import pytest
import yaml

from tests.images import pods
from tests.k8s_helpers import CHART, load_docs, one
from tests.k8s_helpers import helm_template as template

PODMAN = ("-f", str(CHART / "ci" / "podman-values.yaml"))


@pytest.fixture(scope="module")
def docs() -> list[pods.Doc]:
    return load_docs(template(*PODMAN))


def env_of(container: pods.Doc) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_secrets_are_inlined_and_dropped(docs: list[pods.Doc]) -> None:
    played = pods.for_podman(docs)
    assert not [d for d in played if d["kind"] == "Secret"]
    api = one(played, "Deployment", "-api")["spec"]["template"]["spec"]["containers"][0]
    env = env_of(api)
    assert env["COUPON_ADMIN_TOKEN"] == "podman-admin-token"
    profile = yaml.safe_load((CHART / "ci" / "podman-values.yaml").read_text())
    assert env["COUPON_DATABASE_URL"] == profile["database"]["url"]
    assert "COUPON_USER_JWT_SECRET" not in env, "an optional key that is absent is left out"
    job = pods.job_as_pod(one(played, "Job"))
    migrate = job["spec"]["initContainers"][0]
    assert env_of(migrate)["COUPON_ADMIN_TOKEN"] == "podman-admin-token"
    assert job["kind"] == "Pod" and job["spec"]["restartPolicy"] == "Never"


def test_a_required_key_missing_from_the_secret_fails(docs: list[pods.Doc]) -> None:
    broken = copy.deepcopy(docs)
    for secret in [d for d in broken if d["kind"] == "Secret"]:
        del secret["stringData"]["COUPON_ADMIN_TOKEN"]
    with pytest.raises(AssertionError, match="no key COUPON_ADMIN_TOKEN"):
        pods.for_podman(broken)


def test_base64_data_and_secret_ref_are_read() -> None:
    secret = {"kind": "Secret", "metadata": {"name": "s"}, "data": {"K": base64.b64encode(b"v")}}
    container = {"name": "c", "envFrom": [{"secretRef": {"name": "s"}}, {"configMapRef": {}}]}
    pods.inline_secrets(container, pods.secret_values([secret]))
    assert container == {
        "name": "c",
        "env": [{"name": "K", "value": "v"}],
        "envFrom": [{"configMapRef": {}}],
    }


def test_consumer_replicas_get_their_own_port(docs: list[pods.Doc]) -> None:
    consumer = one(docs, "Deployment", "-consumer")
    port = int(one(docs, "ConfigMap")["data"]["COUPON_CONSUMER_METRICS_PORT"])
    out = pods.consumer_replicas(docs, consumer, [port, 19999])
    configs = [d for d in out if d["kind"] == "ConfigMap"]
    assert [c["data"]["COUPON_CONSUMER_METRICS_PORT"] for c in configs] == ["19999"]
    second = [d for d in out if d["kind"] == "Deployment"][1]
    played = pods.host_network(second)["spec"]["template"]["spec"]["containers"][0]
    assert played["envFrom"][0]["configMapRef"]["name"] == configs[0]["metadata"]["name"]
    assert "ports" not in played
    assert pods.probe_urls(second)["consumer readinessProbe"] == "http://127.0.0.1:19999/readyz"
    assert pods.container_name(second, "consumer") == "coupon-issuer-consumer-1-pod-0-consumer"
    with pytest.raises(AssertionError, match="one metrics port per replica"):
        pods.consumer_replicas(docs, consumer, [port])
