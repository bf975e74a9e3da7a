"""Alert rules: valid for promtool, unit-tested by promtool, documented, on real metrics."""

from __future__ import annotations

import pytest

from tests.prometheus import (
    ALERTS,
    DASHBOARDS,
    alert_rules,
    as_bool_comparisons,
    exposed_names,
    metric_names,
    promtool,
)

REQUIRED = {
    "CouponConsumerLagGrowing",
    "CouponConsumerLagSecondsHigh",
    "CouponConsumerFailureRateHigh",
    "CouponDeadLetters",
    "CouponConsumerGroupEmptyWithLag",
    "CouponApiLatencyP99High",
    "CouponConsumerStalled",
    "CouponPartitionHot",
    "CouponStrandedReservationsReleased",
}


def test_promtool_check_rules_passes() -> None:
    output = promtool("check", "rules", str(ALERTS))
    assert "SUCCESS" in output


def test_promtool_unit_tests_pass() -> None:
    output = promtool("test", "rules", "alerts_test.yml", cwd=DASHBOARDS)
    assert "SUCCESS" in output


def test_every_required_alert_exists_and_is_unit_tested() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= REQUIRED
    tested = (DASHBOARDS / "alerts_test.yml").read_text()
    for name in names:
        assert f"alertname: {name}" in tested, f"{name} has no promtool unit test"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_rule_has_severity_summary_description_and_known_metrics(rule: dict[str, str]) -> None:
    labels = rule["labels"]
    annotations = rule["annotations"]
    assert labels["severity"] in {"warning", "critical"}  # type: ignore[index]
    assert annotations["summary"] and annotations["description"]  # type: ignore[index]
    unknown = metric_names(rule["expr"]) - exposed_names()
    assert not unknown, f"{rule['alert']} names unknown metrics {unknown}"


def test_bool_rewrite_keeps_label_matchers_and_turns_thresholds_into_bool() -> None:
    expr = 'sum(x{outcome!="dead_lettered", le="0.5"}) > 0.05 and on (g) y == 0'
    assert as_bool_comparisons(expr) == (
        'sum(x{outcome!="dead_lettered", le="0.5"}) > bool 0.05 and on (g) y == bool 0'
    )
