"""The CRDs on the API server: the ConsumerAutoscaler's schema and CEL rules reject bad specs
server-side (and agree with the pydantic model the operator parses them with), the server fills
in the model's defaults, and KEDA's generated ScaledObject CRD takes the chart's ScaledObject and
refuses a misspelt one."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from app.autoscaling.operator import ConsumerAutoscalerSpec
from tests.k8s_helpers import one, render
from tests.kube.cluster import Cluster

CAS = "/apis/coupons.example.com/v1/namespaces/{ns}/consumerautoscalers"
SCALED_OBJECTS = "/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects"
STRICT = {"fieldValidation": "Strict"}  # what kubectl asks for by default
MINIMAL_SPEC = {
    "targetRef": {"name": "consumer"},
    "kafka": {"bootstrap": "kafka:9092", "topic": "t", "consumerGroup": "g"},
}


def autoscaler(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "coupons.example.com/v1",
        "kind": "ConsumerAutoscaler",
        "metadata": {"generateName": "cas-"},
        "spec": spec,
    }


def with_(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(MINIMAL_SPEC)
    for key, value in changes.items():
        if key == "kafka":
            spec["kafka"] = value
        else:
            spec[key] = value
    return spec


def test_the_api_server_fills_in_the_models_defaults(cluster: Cluster, namespace: str) -> None:
    created = cluster.api.post(
        CAS.format(ns=namespace), json=autoscaler(MINIMAL_SPEC), params=STRICT
    )
    assert created.status_code == 201, created.text
    stored = created.json()["spec"]
    model = ConsumerAutoscalerSpec.model_validate(MINIMAL_SPEC)
    defaults = model.model_dump(by_alias=True)
    knobs = (
        "minReplicas",
        "targetDrainSeconds",
        "lagPerReplica",
        "activationLag",
        "scaleDownStabilizationSeconds",
        "pollSeconds",
    )
    assert {k: stored[k] for k in knobs} == {k: defaults[k] for k in knobs}
    assert "maxReplicas" not in stored  # None: the partition count
    assert ConsumerAutoscalerSpec.model_validate(stored) == model


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (with_(minReplicas=3, maxReplicas=2), "minReplicas must not exceed maxReplicas"),
        (with_(lagPerReplica=-5), "spec.lagPerReplica: Invalid value: -5"),
        (with_(lagPerReplica=0), "spec.lagPerReplica: Invalid value: 0"),
        (with_(activationLag=-1), "spec.activationLag: Invalid value: -1"),
        (with_(minReplicas=-1), "spec.minReplicas: Invalid value: -1"),
        (with_(maxReplicas=0), "spec.maxReplicas: Invalid value: 0"),
        (with_(targetDrainSeconds=0), "spec.targetDrainSeconds: Invalid value: 0"),
        (with_(pollSeconds=0), "spec.pollSeconds: Invalid value: 0"),
        (with_(scaleDownStabilizationSeconds=-1), "spec.scaleDownStabilizationSeconds"),
        (
            with_(kafka={"topic": "t", "consumerGroup": "g"}),
            "set kafka.bootstrap or kafka.bootstrapSecretRef",
        ),
        (with_(targetRef={"name": ""}), "spec.targetRef.name"),
    ],
)
def test_an_invalid_spec_is_refused_by_the_api_server_and_by_the_model(
    cluster: Cluster, namespace: str, spec: dict[str, Any], message: str
) -> None:
    answer = cluster.api.post(CAS.format(ns=namespace), json=autoscaler(spec), params=STRICT)
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["message"]
    if spec["targetRef"]["name"]:  # an empty name is the schema's rule alone
        with pytest.raises(ValidationError):
            ConsumerAutoscalerSpec.model_validate(spec)


def test_a_misspelt_knob_is_refused_under_strict_field_validation(
    cluster: Cluster, namespace: str
) -> None:
    answer = cluster.api.post(
        CAS.format(ns=namespace), json=autoscaler(with_(maxReplica=3)), params=STRICT
    )
    assert answer.status_code == 400, answer.text
    assert 'unknown field "spec.maxReplica"' in answer.json()["message"]


def test_edits_are_validated_too(cluster: Cluster, namespace: str) -> None:
    created = cluster.api.post(CAS.format(ns=namespace), json=autoscaler(with_(maxReplicas=4)))
    assert created.status_code == 201, created.text
    path = f"{CAS.format(ns=namespace)}/{created.json()['metadata']['name']}"
    patch = {"spec": {"minReplicas": 5}}
    headers = {"Content-Type": "application/merge-patch+json"}
    answer = cluster.api.patch(path, json=patch, headers=headers)
    assert answer.status_code == 422, answer.text
    assert "minReplicas must not exceed maxReplicas" in answer.json()["message"]


def test_kedas_crd_takes_the_charts_scaled_object_and_refuses_a_misspelt_one(
    cluster: Cluster, namespace: str
) -> None:
    docs = render("keda")
    scaled = one(docs, "ScaledObject", "-consumer")
    scaled["metadata"]["namespace"] = namespace
    path = SCALED_OBJECTS.format(ns=namespace)
    accepted = cluster.api.post(path, json=scaled, params=STRICT)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["spec"]["triggers"][0]["metadata"]["allowIdleConsumers"] == "false"
    api = one(docs, "ScaledObject", "-api")  # the API's, on requests in flight and CPU
    api["metadata"]["namespace"] = namespace
    accepted = cluster.api.post(path, json=api, params=STRICT)
    assert accepted.status_code == 201, accepted.text
    assert [t["type"] for t in accepted.json()["spec"]["triggers"]] == ["prometheus", "cpu"]

    misspelt = copy.deepcopy(scaled)
    misspelt["metadata"]["name"] += "-2"
    misspelt["spec"]["maxReplicas"] = misspelt["spec"].pop("maxReplicaCount")
    refused = cluster.api.post(path, json=misspelt, params=STRICT)
    assert refused.status_code == 400, refused.text
    assert 'unknown field "spec.maxReplicas"' in refused.json()["message"]
    no_triggers = copy.deepcopy(scaled)
    no_triggers["metadata"]["name"] += "-3"
    del no_triggers["spec"]["triggers"]
    refused = cluster.api.post(path, json=no_triggers, params=STRICT)
    assert refused.status_code == 422, refused.text
