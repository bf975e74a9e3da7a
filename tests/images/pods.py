"""The rendered chart as podman runs it: Secrets resolved into env, the hook Job as a Pod, replicas.

podman 4.3's ``kube play`` runs Deployments, Pods and ConfigMaps and honours securityContext, but it
cannot read Secrets (``secretKeyRef``/``secretRef`` fail with "secret ... is not valid JSON") and
runs one pod per Deployment. So the harness inlines the rendered Secret's values before ``kube
play`` (the chart's secret wiring is proven by tests/unit/test_chart.py instead), turns the hook
Job's pod template into a Pod, and plays the consumer Deployment once per replica, each on its own
metrics port because every pod shares the host network.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

Doc = dict[str, Any]


def secret_values(docs: list[Doc]) -> dict[str, dict[str, str]]:
    """{secret name: {key: value}} of every rendered Secret (stringData and base64 data)."""
    out: dict[str, dict[str, str]] = {}
    for doc in docs:
        if doc.get("kind") == "Secret":
            values = {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}
            values |= {k: str(v) for k, v in doc.get("stringData", {}).items()}
            out[doc["metadata"]["name"]] = values
    return out


def inline_secrets(container: Doc, secrets: dict[str, dict[str, str]]) -> None:
    """Replace secretKeyRef/secretRef in a container by the values; a missing required key fails."""
    env = []
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            env.append(entry)
            continue
        value = secrets.get(ref["name"], {}).get(ref["key"])
        if value is None:
            assert ref.get("optional"), f"{container['name']}: no key {ref['key']} in {ref['name']}"
            continue
        env.append({"name": entry["name"], "value": value})
    for source in container.pop("envFrom", []):
        if "secretRef" in source:
            name = source["secretRef"]["name"]
            env[:0] = [{"name": k, "value": v} for k, v in secrets[name].items()]
        else:
            container.setdefault("envFrom", []).append(source)
    container["env"] = env


def for_podman(docs: list[Doc]) -> list[Doc]:
    """Copies of the pod-bearing docs with Secrets inlined; Secrets themselves dropped."""
    secrets = secret_values(docs)
    out = []
    for doc in copy.deepcopy(docs):
        if doc.get("kind") == "Secret":
            continue
        spec = pod_spec(doc)
        if spec is not None:
            for c in [*spec.get("initContainers", []), *spec["containers"]]:
                inline_secrets(c, secrets)
        out.append(doc)
    return out


def pod_spec(doc: Doc) -> Doc | None:
    if doc.get("kind") in {"Deployment", "Job"}:
        return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    if doc.get("kind") == "Pod":
        return doc["spec"]  # type: ignore[no-any-return]
    return None


def job_as_pod(job: Doc) -> Doc:
    """The Job's pod template as a Pod (``kube play`` runs Pods, not Jobs)."""
    template = job["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": job["metadata"]["name"], "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }


def consumer_replicas(docs: list[Doc], deployment: Doc, ports: list[int]) -> list[Doc]:
    """The consumer Deployment once per replica; replica i > 0 reads a ConfigMap copy with its port.

    (podman's ``env`` does not override ``envFrom`` as Kubernetes' does, so the port moves in a copy
    of the ConfigMap the replica's ``envFrom`` then names.)
    """
    assert deployment["spec"]["replicas"] == len(ports), "one metrics port per replica"
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    out: list[Doc] = []
    for index, port in enumerate(ports):
        doc = copy.deepcopy(deployment)
        doc["metadata"]["name"] = f"{deployment['metadata']['name']}-{index}"
        doc["spec"]["replicas"] = 1
        container = doc["spec"]["template"]["spec"]["containers"][0]
        for p in container["ports"]:
            if p["name"] == "metrics":
                p["containerPort"] = port
        if index:
            copy_name = f"{config['metadata']['name']}-replica-{index}"
            config_copy = copy.deepcopy(config)
            config_copy["metadata"]["name"] = copy_name
            config_copy["data"]["COUPON_CONSUMER_METRICS_PORT"] = str(port)
            out.append(config_copy)
            for source in container["envFrom"]:
                if source.get("configMapRef", {}).get("name") == config["metadata"]["name"]:
                    source["configMapRef"]["name"] = copy_name
        else:
            assert config["data"]["COUPON_CONSUMER_METRICS_PORT"] == str(port)
        out.append(doc)
    return out


def host_network(doc: Doc) -> Doc:
    """Drop containerPorts (host network: podman refuses port mappings) and number the probes."""
    spec = pod_spec(doc)
    assert spec is not None
    for c in spec["containers"]:
        ports = {p["name"]: p["containerPort"] for p in c.pop("ports", [])}
        for probe in PROBES:
            get = c.get(probe, {}).get("httpGet")
            if get and isinstance(get["port"], str):
                get["port"] = ports[get["port"]]
    return doc


PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def probe_urls(doc: Doc) -> dict[str, str]:
    """{"<container> <probe>": url} of every httpGet probe, as seen from the host."""
    spec = pod_spec(doc)
    assert spec is not None
    return {
        f"{c['name']} {probe}": f"http://127.0.0.1:{get['port']}{get['path']}"
        for c in spec["containers"]
        for probe in PROBES
        if (get := c.get(probe, {}).get("httpGet"))
    }


def pod_name(doc: Doc) -> str:
    """The name ``kube play`` gives the pod of a Pod (its name) or a Deployment (<name>-pod-0)."""
    return str(doc["metadata"]["name"]) + ("-pod-0" if doc["kind"] == "Deployment" else "")


def container_name(doc: Doc, container: str) -> str:
    """The name ``kube play`` gives a container: <pod>-<container>."""
    return f"{pod_name(doc)}-{container}"
