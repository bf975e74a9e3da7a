"""The API's per-press metric helpers count into the metrics the dashboards and alerts read."""

from __future__ import annotations

from prometheus_client import REGISTRY

from app.observability import metrics


def _answered(outcome: str) -> float:
    value = REGISTRY.get_sample_value("coupon_api_issue_requests_total", {"outcome": outcome})
    return value or 0.0


def test_each_outcome_counts_into_its_own_labelled_series() -> None:
    accepted, duplicate = _answered("accepted"), _answered("duplicate")
    metrics.count_issue_request("accepted")
    metrics.count_issue_request("accepted")
    metrics.count_issue_request("duplicate")
    assert _answered("accepted") == accepted + 2
    assert _answered("duplicate") == duplicate + 1
