"""The Helm chart: lint, render every profile, validate against Kubernetes/CRD/KEDA schemas, policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.k8s_helpers import (
    CHART,
    CUSTOM_KINDS,
    KUBE_VERSIONS,
    PROFILES,
    ROOT,
    RenderError,
    by_kind,
    chart_has_alerts,
    containers,
    crd_version_schema,
    helm_template,
    load_docs,
    one,
    pod_spec,
    profile_args,
    render,
    run,
    strictify,
    tool,
)
from tests.prometheus import exposed_names, metric_names, promtool

CRD_FILE = CHART / "crds" / "consumerautoscaler.yaml"
# KEDA's own CRD, generated from its Go API types by `make crds` (tools/crds pins the release).
KEDA_CRD_FILE = ROOT / "tests" / "schemas" / "crds" / "keda.sh_scaledobjects.yaml"
REQUIRED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
)


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every profile rendered once per session."""
    return {name: render(name) for name in PROFILES}


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_FILE.read_text())  # type: ignore[no-any-return]


def partitions_of(docs: list[dict[str, Any]]) -> int:
    return int(one(docs, "ConfigMap", "coupon-issuer")["data"]["COUPON_PARTITIONS"])


def workloads(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(d, spec) for d in docs if (spec := pod_spec(d)) is not None]


# --- lint and schema validation ---------------------------------------------------------------


@pytest.mark.parametrize("profile", list(PROFILES))
def test_helm_lint_strict(profile: str) -> None:
    proc = run([tool("helm"), "lint", "--strict", CHART, *profile_args(profile)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("profile", list(PROFILES))
def test_rendered_manifests_pass_kubernetes_validate_strict(
    rendered: dict[str, list[dict[str, Any]]], profile: str, kube_version: str
) -> None:
    errors = []
    for doc in rendered[profile]:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            used = kubernetes_validate.validate(doc, kube_version, strict=True)
            assert used == kube_version, f"validated {name} against {used}, wanted {kube_version}"
        except kubernetes_validate.SchemaNotFoundError:
            if doc["kind"] not in CUSTOM_KINDS:
                errors.append(
                    f"{name}: no Kubernetes {kube_version} schema for {doc['apiVersion']}"
                )
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_crd_passes_kubernetes_validate_strict(crd: dict[str, Any], kube_version: str) -> None:
    assert kubernetes_validate.validate(crd, kube_version, strict=True) == kube_version


def test_kubernetes_validate_catches_an_unknown_field(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    deployment = one(rendered["defaults"], "Deployment", "-api")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)
    del deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"]


# --- the ConsumerAutoscaler CRD ----------------------------------------------------------------


def test_crd_is_exactly_the_agreed_api(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "consumerautoscalers.coupons.example.com"
    assert (spec["group"], spec["scope"]) == ("coupons.example.com", "Namespaced")
    assert spec["names"]["kind"] == "ConsumerAutoscaler"
    assert spec["names"]["plural"] == "consumerautoscalers"
    assert [v["name"] for v in spec["versions"]] == ["v1"]
    version = spec["versions"][0]
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Target",
        "Lag",
        "Partitions",
        "Desired",
        "Current",
        "Age",
    ]
    schema = version["schema"]["openAPIV3Schema"]
    fields = schema["properties"]["spec"]["properties"]
    assert set(fields) == {
        "targetRef",
        "kafka",
        "minReplicas",
        "maxReplicas",
        "targetDrainSeconds",
        "lagPerReplica",
        "activationLag",
        "scaleDownStabilizationSeconds",
        "pollSeconds",
    }
    assert set(fields["targetRef"]["properties"]) == {"name"}
    assert set(fields["kafka"]["properties"]) == {
        "bootstrap",
        "topic",
        "consumerGroup",
        "bootstrapSecretRef",
    }
    assert set(fields["kafka"]["properties"]["bootstrapSecretRef"]["properties"]) == {"name", "key"}
    defaults = {k: v.get("default") for k, v in fields.items()}
    assert defaults == {
        "targetRef": None,
        "kafka": None,
        "minReplicas": 0,
        "maxReplicas": None,
        "targetDrainSeconds": 30,
        "lagPerReplica": 1000,
        "activationLag": 1,
        "scaleDownStabilizationSeconds": 60,
        "pollSeconds": 5,
    }
    assert fields["minReplicas"]["minimum"] == 0 and fields["maxReplicas"]["minimum"] == 1
    status = schema["properties"]["status"]["properties"]
    assert set(status) == {
        "lag",
        "lagSeconds",
        "partitions",
        "desiredReplicas",
        "currentReplicas",
        "lastDecision",
        "reason",
        "lastScaleTime",
        "conditions",
    }
    assert status["lagSeconds"]["type"] == "number"
    assert status["lastScaleTime"]["format"] == "date-time"
    assert set(status["conditions"]["items"]["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
    }
    assert "x-kubernetes-preserve-unknown-fields" not in CRD_FILE.read_text()


@pytest.mark.parametrize("profile", ["defaults", "operator", "kind"])
def test_consumerautoscaler_validates_against_the_crd(
    rendered: dict[str, list[dict[str, Any]]], crd: dict[str, Any], profile: str
) -> None:
    schema = strictify(crd_version_schema(crd, "v1"))
    ca = one(rendered[profile], "ConsumerAutoscaler")
    assert ca["apiVersion"] == "coupons.example.com/v1"
    jsonschema.Draft7Validator(schema).validate(ca)
    consumer = one(rendered[profile], "Deployment", "-consumer")
    assert ca["spec"]["targetRef"]["name"] == consumer["metadata"]["name"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(minReplicas=-1),
        lambda s: s.update(maxReplicas=0),
        lambda s: s.pop("targetRef"),
        lambda s: s["kafka"].pop("topic"),
        lambda s: s.update(lagPerReplica="1000"),
        lambda s: s.update(unknownField=1),
    ],
    ids=["negative-min", "zero-max", "no-target", "no-topic", "string-lag", "unknown-field"],
)
def test_crd_schema_rejects_bad_consumerautoscalers(
    rendered: dict[str, list[dict[str, Any]]], crd: dict[str, Any], mutate: Any
) -> None:
    ca = json.loads(json.dumps(one(rendered["operator"], "ConsumerAutoscaler")))
    mutate(ca["spec"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(strictify(crd_version_schema(crd, "v1"))).validate(ca)


def test_crd_status_accepts_what_the_operator_reports(crd: dict[str, Any]) -> None:
    status: dict[str, Any] = {
        "lag": 1200,
        "lagSeconds": 2.5,
        "partitions": 3,
        "desiredReplicas": 2,
        "currentReplicas": 1,
        "lastDecision": "scale-up",
        "reason": "lag 1200 > 1000 per replica",
        "lastScaleTime": "2030-01-01T00:00:00Z",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Reconciled",
                "message": "ok",
                "lastTransitionTime": "2030-01-01T00:00:00Z",
            }
        ],
    }
    schema = strictify(crd_version_schema(crd, "v1"))
    jsonschema.Draft7Validator(schema["properties"]["status"]).validate(status)
    status["conditions"][0]["status"] = "Maybe"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema["properties"]["status"]).validate(status)


# --- KEDA -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def keda_schema() -> dict[str, Any]:
    keda_crd = yaml.safe_load(KEDA_CRD_FILE.read_text())
    return strictify(crd_version_schema(keda_crd, "v1alpha1"))  # type: ignore[no-any-return]


def test_scaledobject_validates_against_kedas_generated_crd(
    rendered: dict[str, list[dict[str, Any]]], keda_schema: dict[str, Any]
) -> None:
    so = one(rendered["keda"], "ScaledObject", "-consumer")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    jsonschema.Draft7Validator(keda_schema).validate(so)
    trigger = so["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    assert trigger["metadata"]["topic"] == "coupon-issue-request"
    assert trigger["authenticationRef"] == {"name": "kafka-sasl"}
    assert (
        so["spec"]["scaleTargetRef"]["name"]
        == one(rendered["keda"], "Deployment", "-consumer")["metadata"]["name"]
    )


def test_kedas_crd_rejects_a_misspelt_field(
    rendered: dict[str, list[dict[str, Any]]], keda_schema: dict[str, Any]
) -> None:
    so = json.loads(json.dumps(one(rendered["keda"], "ScaledObject", "-consumer")))
    so["spec"]["maxReplicas"] = so["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(keda_schema).validate(so)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_autoscaling_resources_match_the_mode(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    docs = rendered[profile]
    mode = one(docs, "Deployment", "-consumer")["metadata"]["annotations"][
        "coupons.example.com/autoscaling-mode"
    ]
    assert len(by_kind(docs, "ConsumerAutoscaler")) == (mode == "operator")
    assert len(
        [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator")]
    ) == (mode == "operator")
    assert len(by_kind(docs, "Role")) == (mode == "operator")
    consumer_scalers = [
        d for d in by_kind(docs, "ScaledObject") if d["metadata"]["name"].endswith("-consumer")
    ]
    assert len(consumer_scalers) == (mode == "keda")


def test_the_api_scales_on_requests_in_flight_in_keda_mode(
    rendered: dict[str, list[dict[str, Any]]], keda_schema: dict[str, Any], tmp_path: Path
) -> None:
    docs = rendered["keda"]
    so = one(docs, "ScaledObject", "-api")
    jsonschema.Draft7Validator(keda_schema).validate(so)
    api = one(docs, "Deployment", "-api")
    assert so["spec"]["scaleTargetRef"]["name"] == api["metadata"]["name"]
    assert "replicas" not in api["spec"]  # the HPA KEDA builds owns them
    assert not [d for d in by_kind(docs, "HorizontalPodAutoscaler")]  # KEDA's HPA, not a second
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (2, 10)
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    in_flight, cpu = so["spec"]["triggers"]
    assert (in_flight["type"], in_flight["metricType"]) == ("prometheus", "AverageValue")
    meta = in_flight["metadata"]
    assert meta["serverAddress"] == "http://prometheus-operated.monitoring:9090"
    assert meta["threshold"] == "64"
    assert meta["ignoreNullValues"] == "false"  # no series: an error the HPA shows, never 0
    # The ServiceMonitor's labels: job is the API Service's name, namespace the release's.
    service = one(docs, "Service", "-api")["metadata"]["name"]
    namespace = one(docs, "Deployment", "-api")["metadata"]["namespace"]
    selector = f'namespace="{namespace}",job="{service}"'
    assert meta["query"] == (
        f"sum(coupon_api_requests_in_flight{{{selector}}}"
        f" - coupon_api_long_polls_waiting{{{selector}}})"
    )
    # It parses, and names metrics the API exposes.
    rules = tmp_path / "query.yml"
    rules.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "q", "rules": [{"record": "q", "expr": meta["query"]}]}]}
        )
    )
    promtool("check", "rules", str(rules))
    assert metric_names(meta["query"]) <= exposed_names()
    assert (cpu["type"], cpu["metricType"], cpu["metadata"]) == (
        "cpu",
        "Utilization",
        {"value": "70"},
    )


def test_the_apis_hpa_mode_scales_on_cpu_alone() -> None:
    docs = load_docs(helm_template("--set", "api.autoscaling.scaleDownStabilizationSeconds=60"))
    hpa = one(docs, "HorizontalPodAutoscaler", "-api")
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 60
    assert not by_kind(docs, "ScaledObject")


def test_the_apis_keda_mode_without_cpu_and_with_a_query_of_ones_own() -> None:
    docs = load_docs(
        helm_template(
            *("--set", "api.autoscaling.mode=keda"),
            *("--set", "api.autoscaling.targetCPUUtilizationPercentage=0"),
            *("--set", "api.autoscaling.keda.prometheusServer=http://p:9090"),
            *("--set-string", "api.autoscaling.keda.query=sum(in_flight)"),
            *("--set", "api.autoscaling.keda.inFlightPerPod=16"),
        )
    )
    (trigger,) = one(docs, "ScaledObject", "-api")["spec"]["triggers"]
    assert trigger["metadata"]["query"] == "sum(in_flight)"
    assert trigger["metadata"]["threshold"] == "16"
    assert not by_kind(docs, "HorizontalPodAutoscaler")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["api.autoscaling.mode=keda"], "api.autoscaling.keda.prometheusServer is required"),
        (
            ["api.autoscaling.targetCPUUtilizationPercentage=0"],
            "targetCPUUtilizationPercentage must be at least 1 in mode hpa",
        ),
    ],
    ids=["keda-without-prometheus", "hpa-without-cpu"],
)
def test_the_apis_autoscaling_refuses_what_cannot_scale(sets: list[str], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        helm_template(*[a for s in sets for a in ("--set", s)])


# --- policies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_pod_is_locked_down(rendered: dict[str, list[dict[str, Any]]], profile: str) -> None:
    for doc, spec in workloads(rendered[profile]):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in containers(spec):
            at = f"{where} container {c['name']}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, at
            assert sc["allowPrivilegeEscalation"] is False, at
            assert sc["runAsNonRoot"] is True, at
            assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0, at
            assert sc["capabilities"]["drop"] == ["ALL"], at
            assert "add" not in sc["capabilities"], at
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", at
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{at}: no writable /tmp"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{at}: resources.{kind}"


@pytest.mark.parametrize("profile", list(PROFILES))
def test_images_are_pinned(rendered: dict[str, list[dict[str, Any]]], profile: str) -> None:
    for _, spec in workloads(rendered[profile]):
        for c in containers(spec):
            image = c["image"]
            if "@sha256:" in image:
                continue
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag and tag and tag != "latest", image


@pytest.mark.parametrize("profile", list(PROFILES))
def test_long_running_containers_have_all_probes(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    for doc in by_kind(rendered[profile], "Deployment"):
        spec = doc["spec"]["template"]["spec"]
        for c in spec["containers"]:
            ports = {p["name"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{doc['metadata']['name']}: {probe}"
                port = c[probe].get("httpGet", {}).get("port")
                assert port in ports, f"{doc['metadata']['name']}: {probe} port {port} not declared"


def test_api_probes_use_healthz_and_readyz(rendered: dict[str, list[dict[str, Any]]]) -> None:
    api = one(rendered["defaults"], "Deployment", "-api")["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    consumer = one(rendered["defaults"], "Deployment", "-consumer")["spec"]["template"]["spec"]
    assert consumer["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert consumer["terminationGracePeriodSeconds"] >= 30


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_resource_is_labelled(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    for doc in rendered[profile]:
        labels = doc["metadata"].get("labels", {})
        missing = [k for k in REQUIRED_LABELS if k not in labels]
        assert not missing, f"{doc['kind']}/{doc['metadata']['name']} lacks {missing}"
        if (spec := pod_spec(doc)) is not None:
            pod_labels = doc["spec"]["template"]["metadata"]["labels"]
            assert "app.kubernetes.io/component" in pod_labels
            selector = doc["spec"].get("selector", {}).get("matchLabels", {})
            assert selector.items() <= pod_labels.items(), doc["metadata"]["name"]
            assert spec is not None


@pytest.mark.parametrize("profile", list(PROFILES))
def test_selectors_and_references_resolve(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    docs = rendered[profile]
    pods = [(d["spec"]["template"]["metadata"]["labels"], s) for d, s in workloads(docs)]
    for svc in by_kind(docs, "Service"):
        matching = [s for labels, s in pods if svc["spec"]["selector"].items() <= labels.items()]
        assert matching, f"Service {svc['metadata']['name']} selects no pod"
        names = {p["name"] for s in matching for c in s["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, f"{svc['metadata']['name']}: {port['targetPort']}"
    configmaps = {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
    secrets = {d["metadata"]["name"] for d in by_kind(docs, "Secret")}
    values_file = PROFILES[profile]
    values = yaml.safe_load((CHART / values_file).read_text()) if values_file else {}
    external = {values.get("existingSecret", {}).get("name")} - {None}
    accounts = {d["metadata"]["name"] for d in by_kind(docs, "ServiceAccount")}
    for doc, spec in workloads(docs):
        if "serviceAccountName" in spec:
            assert spec["serviceAccountName"] in accounts, doc["metadata"]["name"]
        for c in containers(spec):
            for src in c.get("envFrom", []):
                assert src["configMapRef"]["name"] in configmaps
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets | external, (
                        f"{doc['metadata']['name']}: {ref['name']}"
                    )


@pytest.mark.parametrize("profile", list(PROFILES))
def test_consumers_never_exceed_partitions(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    docs = rendered[profile]
    partitions = partitions_of(docs)
    consumer = one(docs, "Deployment", "-consumer")
    assert consumer["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    mode = consumer["metadata"]["annotations"]["coupons.example.com/autoscaling-mode"]
    if mode == "none":
        ceiling = consumer["spec"]["replicas"]
    elif mode == "keda":
        assert "replicas" not in consumer["spec"]
        ceiling = one(docs, "ScaledObject", "-consumer")["spec"]["maxReplicaCount"]
    else:
        assert "replicas" not in consumer["spec"]
        ceiling = one(docs, "ConsumerAutoscaler")["spec"]["maxReplicas"]
    assert 1 <= ceiling <= partitions


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["autoscaling.mode=none", "consumer.replicas=4", "kafka.partitions=3"],
            "consumer.replicas (4) exceeds kafka.partitions (3)",
        ),
        (
            ["autoscaling.mode=operator", "autoscaling.maxReplicas=4", "kafka.partitions=3"],
            "autoscaling.maxReplicas (4) exceeds kafka.partitions (3)",
        ),
        (
            ["autoscaling.mode=keda", "autoscaling.maxReplicas=13", "kafka.partitions=12"],
            "autoscaling.maxReplicas (13) exceeds kafka.partitions (12)",
        ),
        (
            ["autoscaling.mode=keda", "autoscaling.minReplicas=3", "kafka.partitions=2"],
            "autoscaling.minReplicas (3) exceeds the maximum consumer replicas (2)",
        ),
        (
            ["autoscaling.mode=keda", "autoscaling.keda.extraMetadata.allowIdleConsumers=true"],
            "allowIdleConsumers must stay",
        ),
    ],
    ids=["none", "operator", "keda", "min-over-max", "keda-idle-consumers"],
)
def test_rendering_fails_when_consumers_would_exceed_partitions(
    sets: list[str], message: str
) -> None:
    args = [a for s in sets for a in ("--set-string" if "extraMetadata" in s else "--set", s)]
    with pytest.raises(RenderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        helm_template(*args)


def test_max_replicas_default_to_partitions() -> None:
    docs = load_docs(helm_template("--set", "kafka.partitions=7"))
    assert one(docs, "ConsumerAutoscaler")["spec"]["maxReplicas"] == 7
    docs = load_docs(helm_template("--set", "kafka.partitions=7", "--set", "autoscaling.mode=keda"))
    assert one(docs, "ScaledObject", "-consumer")["spec"]["maxReplicaCount"] == 7


def test_operator_rbac_is_minimal(rendered: dict[str, list[dict[str, Any]]]) -> None:
    allowed = {
        ("coupons.example.com", "consumerautoscalers"): {"list", "watch", "patch"},
        ("coupons.example.com", "consumerautoscalers/status"): {"patch"},
        ("apps", "deployments/scale"): {"get", "patch"},
        ("", "events"): {"create"},
        ("", "secrets"): {"get"},
    }
    # Named one by one: the release's consumer Deployment, the Secrets listed in the values.
    named = {"secrets", "deployments/scale"}
    for profile, docs in rendered.items():
        assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding"), profile
        for role in by_kind(docs, "Role"):
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        assert "*" not in (group, resource) and "*" not in rule["verbs"]
                        assert set(rule["verbs"]) <= allowed[(group, resource)], (
                            group,
                            resource,
                            rule["verbs"],
                        )
                        if resource in named:
                            assert rule.get("resourceNames"), f"{resource} must be named"
                        if resource == "deployments/scale":
                            consumer = one(docs, "Deployment", "-consumer")["metadata"]["name"]
                            assert rule["resourceNames"] == [consumer]
        for binding in by_kind(docs, "RoleBinding"):
            roles = {r["metadata"]["name"] for r in by_kind(docs, "Role")}
            assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] in roles
    operator_pod = one(rendered["operator"], "Deployment", "-operator")["spec"]["template"]["spec"]
    assert operator_pod["automountServiceAccountToken"] is True
    for doc, spec in workloads(rendered["operator"]):
        if not doc["metadata"]["name"].endswith("-operator"):
            assert spec["automountServiceAccountToken"] is False, doc["metadata"]["name"]


def test_availability_features(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    pdbs = {d["metadata"]["name"] for d in by_kind(docs, "PodDisruptionBudget")}
    assert pdbs == {"coupon-issuer-api", "coupon-issuer-consumer"}
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "coupon-issuer-api"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in one(docs, "Deployment", "-api")["spec"], "the HPA owns api replicas"
    for doc in by_kind(docs, "Deployment"):
        tsc = doc["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert (
            tsc[0]["labelSelector"]["matchLabels"].items()
            <= doc["spec"]["template"]["metadata"]["labels"].items()
        )
    assert not by_kind(rendered["none"], "HorizontalPodAutoscaler")
    assert one(rendered["none"], "Deployment", "-api")["spec"]["replicas"] == 3


@pytest.mark.parametrize("profile", ["defaults", "existing-secret"])
def test_hook_job_migrates_then_creates_topics(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    docs = rendered[profile]
    job = one(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    spec = job["spec"]["template"]["spec"]
    assert [c["args"] for c in spec["initContainers"]] == [["migrate"]]
    assert [c["args"] for c in spec["containers"]] == [["topics"]]
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["COUPON_PARTITIONS"]["value"] == str(partitions_of(docs))
    assert spec["restartPolicy"] == "Never"
    # At pre-install the release's Secret does not exist yet: the Job must read a hook Secret or the
    # existing one, never the release Secret.
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in spec["initContainers"][0]["env"]
        if "valueFrom" in e
    }
    hook_secrets = {
        d["metadata"]["name"]
        for d in by_kind(docs, "Secret")
        if d["metadata"].get("annotations", {}).get("helm.sh/hook")
    }
    if profile == "existing-secret":
        assert refs == {"coupon-issuer-credentials"} and not hook_secrets
    else:
        assert refs == hook_secrets == {"coupon-issuer-migrations"}

        def weight(d: dict[str, Any]) -> int:
            return int(d["metadata"]["annotations"]["helm.sh/hook-weight"])

        assert weight(one(docs, "Secret", "-migrations")) < weight(job)


def test_existing_secret_replaces_the_chart_secret(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["existing-secret"]
    assert not by_kind(docs, "Secret")
    api = one(docs, "Deployment", "-api")["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in api["env"] if "valueFrom" in e}
    assert refs["COUPON_DATABASE_URL"] == {
        "name": "coupon-issuer-credentials",
        "key": "database-url",
    }
    # Required: a Secret without the admin token keeps the pod from starting (never open).
    assert refs["COUPON_ADMIN_TOKEN"] == {"name": "coupon-issuer-credentials", "key": "admin-token"}
    assert "@sha256:" in api["image"]
    secret = one(rendered["operator"], "Secret", "coupon-issuer")
    assert secret["stringData"]["COUPON_ADMIN_TOKEN"] == "ci-admin-token"


# --- the admin endpoints are never deployed open ---------------------------------------------------


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_pod_gets_a_required_admin_token(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    docs = rendered[profile]
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in by_kind(docs, "Secret")}
    for doc, spec in workloads(docs):
        for c in containers(spec):
            if "env" not in c or c["args"] == ["topics"]:
                continue  # `topics` only talks to Kafka
            env = {e["name"]: e for e in c["env"]}
            at = f"{doc['metadata']['name']} container {c['name']}"
            ref = env["COUPON_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert not ref.get("optional"), f"{at}: the admin token must not be optional"
            if ref["name"] in secrets:  # a Secret the chart renders holds a non-empty token
                assert secrets[ref["name"]][ref["key"]], at


@pytest.mark.parametrize(
    "sets",
    [["auth.adminToken="], ["auth.adminToken=", "migrations.enabled=false"]],
    ids=["default", "no-migrations"],
)
def test_an_empty_admin_token_does_not_render(sets: list[str]) -> None:
    with pytest.raises(RenderError, match=r"auth\.adminToken is empty: the admin endpoints"):
        helm_template(*[a for s in sets for a in ("--set", s)])


def test_an_existing_secret_needs_no_admin_token_value() -> None:
    docs = load_docs(
        helm_template("--set", "auth.adminToken=", "--set", "existingSecret.name=my-credentials")
    )
    assert not by_kind(docs, "Secret")
    api = one(docs, "Deployment", "-api")["spec"]["template"]["spec"]["containers"][0]
    ref = {e["name"]: e for e in api["env"]}["COUPON_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "my-credentials", "key": "COUPON_ADMIN_TOKEN"}


def test_redis_cluster_reaches_every_container_that_reads_redis(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    default = one(rendered["defaults"], "ConfigMap", "coupon-issuer")["data"]
    assert default["COUPON_REDIS_CLUSTER"] == "false"
    docs = load_docs(helm_template(*profile_args("defaults"), "--set", "redis.cluster=true"))
    assert one(docs, "ConfigMap", "coupon-issuer")["data"]["COUPON_REDIS_CLUSTER"] == "true"
    readers = []
    for doc, spec in workloads(docs):
        for c in containers(spec):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if "COUPON_REDIS_URL" not in env:
                continue
            readers.append(f"{doc['metadata']['name']}/{c['name']}")
            config = {r.get("configMapRef", {}).get("name") for r in c.get("envFrom", [])}
            assert "coupon-issuer" in config or env.get("COUPON_REDIS_CLUSTER") == "true", c
    assert len(readers) >= 3, readers  # the API, the consumers, the lag exporter's reconciler


def test_ingress_profile_routes_to_the_api_service(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    ingress = one(rendered["ingress"], "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "coupon-issuer-api", "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["secretName"] == "coupons-tls"
    assert not by_kind(rendered["defaults"], "Ingress")


def test_observability_resources(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["operator"]
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert {e["port"] for e in sm["spec"]["endpoints"]} == {"http", "metrics"}
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "consumer"
    policies = {d["metadata"]["name"]: d for d in by_kind(docs, "NetworkPolicy")}
    assert set(policies) == {
        f"coupon-issuer-{c}" for c in ("api", "consumer", "lag-exporter", "operator")
    }
    assert not by_kind(rendered["defaults"], "NetworkPolicy")
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert not by_kind(rendered["defaults"], kind), f"{kind} must be opt-in"


# --- values.schema.json -------------------------------------------------------------------------


def _merge(base: Any, overlay: Any) -> Any:
    """Helm's coalescing of a values file over values.yaml (maps merge, everything else replaces)."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        return {k: _merge(base.get(k), v) if k in base else v for k, v in overlay.items()} | {
            k: v for k, v in base.items() if k not in overlay
        }
    return overlay


def test_values_yaml_and_profiles_satisfy_values_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)
    profiles = [*sorted((CHART / "ci").glob("*-values.yaml")), ROOT / "k8s" / "chart-values.yaml"]
    for values_file in profiles:
        merged = _merge(defaults, yaml.safe_load(values_file.read_text()))
        jsonschema.Draft7Validator(schema).validate(merged)


def _values_keys(node: Any, prefix: str = "") -> set[str]:
    if not isinstance(node, dict) or not node:
        return {prefix}
    return set().union(
        *(_values_keys(v, f"{prefix}.{k}" if prefix else k) for k, v in node.items())
    )


def _deref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node``, or the ``#/definitions/...`` entry it refers to."""
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/definitions/"), ref
        node = schema["definitions"][ref.removeprefix("#/definitions/")]
    return node


def test_every_value_is_typed_in_the_schema() -> None:
    """Each leaf of values.yaml reaches a typed schema node (free-form maps end the walk)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    untyped = []
    for key in sorted(_values_keys(yaml.safe_load((CHART / "values.yaml").read_text()))):
        node = schema
        for part in key.split("."):
            if part in node.get("properties", {}):
                node = _deref(schema, node["properties"][part])
            elif isinstance(node.get("additionalProperties"), dict) or (
                node.get("type") in {"object", "array"} and "properties" not in node
            ):
                break  # a typed free-form map/list (labels, resources, tolerations...)
            else:
                untyped.append(key)
                break
        if not any(k in node for k in ("type", "enum", "const", "anyOf")):
            untyped.append(key)
    assert not untyped, untyped


def _subtrees(node: Any) -> list[Any]:
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return [node, *(sub for child in children for sub in _subtrees(child))]


def test_values_schema_defines_shared_shapes_once() -> None:
    """resources, image overrides, quantities... are definitions, each used, none copied inline."""
    text = (CHART / "values.schema.json").read_text()
    schema = json.loads(text)
    definitions = schema["definitions"]
    assert {"resources", "imageOverride", "imageTag", "quantity"} <= set(definitions)
    inline = _subtrees(schema["properties"]) + _subtrees(list(definitions.values()))
    for name, body in definitions.items():
        assert f'"#/definitions/{name}"' in text, f"definition {name} is never used"
        assert inline.count(body) == 1, f"{name} is also written out inline"
    api = schema["properties"]["api"]["properties"]
    assert api["resources"] == {"$ref": "#/definitions/resources"}
    assert api["image"] == {"$ref": "#/definitions/imageOverride"}


@pytest.mark.parametrize(
    ("sets", "path"),
    [
        (["kafka.partitions=-1"], "/kafka/partitions"),
        (["kafka.partitions=0"], "/kafka/partitions"),
        (["autoscaling.mode=hpa"], "/autoscaling/mode"),
        (["autoscaling.minReplicas=-2"], "/autoscaling/minReplicas"),
        (["image.tag=latest"], "/image/tag"),
        (["api.image.tag=latest"], "/api/image/tag"),
        (["kafka.bootstrap=kafka"], "/kafka/bootstrap"),
        (
            ["securityContext.readOnlyRootFilesystem=false"],
            "/securityContext/readOnlyRootFilesystem",
        ),
        (["podSecurityContext.runAsNonRoot=false"], "/podSecurityContext/runAsNonRoot"),
        (["api.resources.limits=null"], "/api/resources"),
        (["api.port=70000"], "/api/port"),
        (["config.logFormat=xml"], "/config/logFormat"),
        (["redis.cluster=maybe"], "/redis/cluster"),
        (["securityContext.capabilities.drop={NET_RAW}"], "/securityContext/capabilities/drop"),
        (
            ["podSecurityContext.seccompProfile.type=Unconfined"],
            "/podSecurityContext/seccompProfile",
        ),
        (["consumerReplicas=3"], "consumerReplicas"),
        (["api.autoscaling.mode=cpu"], "/api/autoscaling/mode"),
    ],
    ids=lambda v: v if isinstance(v, str) else v[0],
)
def test_values_schema_rejects_bad_values(sets: list[str], path: str) -> None:
    with pytest.raises(RenderError) as err:
        helm_template(*[a for s in sets for a in ("--set", s)])
    assert "schema" in str(err.value) and path in str(err.value), str(err.value)


# --- dashboards and alert rules: one source of truth ----------------------------------------------


def _source_files() -> dict[str, bytes]:
    folder = ROOT / "dashboards"
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))} | (
        {"alerts.yml": (folder / "alerts.yml").read_bytes()}
        if (folder / "alerts.yml").is_file()
        else {}
    )


def test_chart_copies_equal_dashboards_folder() -> None:
    chart_dir = CHART / "dashboards"
    copies = {p.name: p.read_bytes() for p in sorted(chart_dir.glob("*.json"))}
    if (chart_dir / "alerts.yml").is_file():
        copies["alerts.yml"] = (chart_dir / "alerts.yml").read_bytes()
    assert copies == _source_files(), "chart copies differ from dashboards/: run `make chart-sync`"


def test_dashboard_configmaps_equal_the_files(rendered: dict[str, list[dict[str, Any]]]) -> None:
    sources = {n: b.decode() for n, b in _source_files().items() if n.endswith(".json")}
    maps = [
        d
        for d in by_kind(rendered["defaults"], "ConfigMap")
        if "-dashboard-" in d["metadata"]["name"]
    ]
    found: dict[str, str] = {}
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert len(cm["data"]) == 1, "one dashboard per ConfigMap"
        found.update(cm["data"])
    assert found == sources
    for text in found.values():
        json.loads(text)
    assert not [
        d for d in by_kind(rendered["none"], "ConfigMap") if "-dashboard-" in d["metadata"]["name"]
    ]


def test_prometheusrule_equals_alerts_file() -> None:
    args = ["--set", "metrics.prometheusRule.enabled=true"]
    if not chart_has_alerts():
        with pytest.raises(RenderError, match="make chart-sync"):
            helm_template(*args)
        assert not (ROOT / "dashboards" / "alerts.yml").exists(), "run `make chart-sync`"
        return
    rule = one(load_docs(helm_template(*args)), "PrometheusRule")
    source = yaml.safe_load((ROOT / "dashboards" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
    assert rule["spec"]["groups"], "alerts.yml has no groups"


def test_dashboard_configmaps_are_not_vacuous() -> None:
    """Guard against a vacuous comparison: a rendered ConfigMap really carries the file bytes."""
    docs = (
        load_docs(helm_template("--show-only", "templates/dashboards.yaml"))
        if _source_files()
        else []
    )
    if not docs:
        pytest.fail("no dashboards/*.json to render; the sync test would be vacuous")
    sample = next(iter(docs[0]["data"].values()))
    assert sample.encode() in _source_files().values()
