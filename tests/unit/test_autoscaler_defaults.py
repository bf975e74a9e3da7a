"""One source for the ConsumerAutoscaler's defaults: the model that parses the spec (ScalingSpec).

The CRD schema (what ``kubectl explain`` shows and the API server fills in) and the chart's
values.yaml / values.schema.json repeat its defaults and bounds; these tests fail when they drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.autoscaling.operator import ConsumerAutoscalerSpec
from app.autoscaling.policy import ScalingSpec

CHART = Path(__file__).resolve().parents[2] / "charts" / "coupon-issuer"
TUNING = {
    "capAtLaggingPartitions",
    "tolerance",
    "rateSmoothing",
}  # the policy's own, not a CRD knob
WHERE = {"targetRef", "kafka"}  # what to scale and where to measure: no defaults


def crd_spec() -> dict[str, Any]:
    crd = yaml.safe_load((CHART / "crds" / "consumerautoscaler.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


def model_schema() -> dict[str, Any]:
    return ConsumerAutoscalerSpec.model_json_schema(by_alias=True)


def knobs() -> dict[str, dict[str, Any]]:
    """The model's CRD knobs by camelCase name, with their JSON schema."""
    props = ScalingSpec.model_json_schema(by_alias=True)["properties"]
    return {name: prop for name, prop in props.items() if name not in TUNING}


def bounds(prop: dict[str, Any]) -> dict[str, Any]:
    """Type, default, minimum and maximum of a schema property (``X | None`` unwrapped)."""
    (typed,) = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    return {
        "type": typed["type"],
        "default": prop.get("default"),
        "minimum": typed.get("minimum"),
        "maximum": typed.get("maximum"),
    }


def test_the_crd_has_exactly_the_models_knobs_and_requires_what_the_model_requires() -> None:
    spec = crd_spec()
    assert set(spec["properties"]) - WHERE == set(knobs())
    schema = model_schema()
    assert set(schema["required"]) == set(spec["required"]) == WHERE
    kafka = spec["properties"]["kafka"]
    assert set(schema["$defs"]["KafkaSource"]["properties"]) == set(kafka["properties"])
    assert set(schema["$defs"]["KafkaSource"]["required"]) == set(kafka["required"])


@pytest.mark.parametrize("name", sorted(knobs()))
def test_crd_defaults_and_bounds_are_the_models(name: str) -> None:
    model, crd = bounds(knobs()[name]), bounds(crd_spec()["properties"][name])
    assert (crd["default"], crd["minimum"], crd["maximum"]) == (
        model["default"],
        model["minimum"],
        model["maximum"],
    )
    # An integer in the model must be one in the CRD (a whole number of seconds is fine for a float).
    assert crd["type"] == "integer"
    assert model["type"] in ("integer", "number")


def test_chart_values_default_to_the_models_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["autoscaling"]
    expected = {name: bounds(prop)["default"] for name, prop in knobs().items()}
    expected["maxReplicas"] = (
        0  # the chart's "no maximum": the partition count, as the model's None
    )
    assert {name: values[name] for name in expected} == expected


def test_chart_values_schema_has_the_models_minimums() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    props = schema["properties"]["autoscaling"]["properties"]
    expected = {name: bounds(prop)["minimum"] for name, prop in knobs().items()}
    expected["maxReplicas"] = 0  # 0 is the chart's "no maximum"
    assert {name: props[name]["minimum"] for name in expected} == expected
