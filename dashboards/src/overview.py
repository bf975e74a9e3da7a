"""Coupon issuance — overview: requests, API latency, issues, failures, end-to-end latency."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.models import dashboard, units

from dashboards.src.common import (
    GOOD,
    LAG,
    NS,
    RATE,
    Panel,
    bargauge_panel,
    new_dashboard,
    quantiles,
    query,
    rate_by,
    stat_panel,
    timeseries_panel,
)

FILE = "coupon-overview.json"
ISSUE_ROUTE = "/api/coupons/{coupon_id}/issue/queue"


def _outcome_rate(selector: str) -> str:
    return f"sum(rate(coupon_consumer_messages_total{{{NS}, {selector}}}[{RATE}]))"


def _failure_ratio() -> str:
    # A dead letter follows its failed attempts; counting it too would count the message twice.
    failed = _outcome_rate('outcome="failed"')
    processed = _outcome_rate('outcome!="dead_lettered"')
    return f"{failed} / {processed}"


def _headline() -> list[Panel]:
    return [
        stat_panel(
            "Accepted requests/s",
            "Issue requests admitted by the Redis gate and acknowledged by the broker.",
            units.RequestsPerSecond,
            [
                query(
                    f'sum(rate(coupon_api_issue_requests_total{{{NS}, outcome="accepted"}}[{RATE}]))'
                )
            ],
        ),
        stat_panel(
            "Issued/s",
            "Coupons issued in PostgreSQL by the consumers.",
            units.OpsPerSecond,
            [query(_outcome_rate('outcome="issued"'))],
        ),
        stat_panel(
            "Failure ratio",
            "Failed processing attempts ÷ processed messages (every outcome but dead_lettered).",
            units.PercentUnit,
            [query(_failure_ratio())],
            (*GOOD, ("orange", 0.01), ("red", 0.05)),
        ).decimals(2),
        stat_panel(
            "Total consumer lag",
            "Messages queued and not yet consumed, all partitions (from the lag exporter).",
            units.Short,
            [query(f"sum(coupon_consumer_lag_messages{{{LAG}}})")],
            (*GOOD, ("orange", 1000), ("red", 10000)),
        ),
    ]


def _api() -> list[Panel]:
    api_route = f'{NS}, route="{ISSUE_ROUTE}"'
    return [
        timeseries_panel(
            "Issue requests/s by outcome",
            "Accepted vs rejected presses by reason (duplicate, sold_out, expired, not_found,"
            " broker_unavailable, rate_limited, unauthorized).",
            units.RequestsPerSecond,
            [rate_by("coupon_api_issue_requests_total", "outcome", NS)],
        ),
        timeseries_panel(
            "Issue API latency (p50 / p95 / p99)",
            "Latency of POST /api/coupons/{id}/issue/queue measured in the API; the alert fires"
            " on p99 above 50 ms.",
            units.Seconds,
            quantiles("coupon_api_request_duration_seconds", api_route),
            (*GOOD, ("red", 0.05)),
        ),
        timeseries_panel(
            "API p99 latency by route",
            "p99 of every route, to tell the hot path from admin and status reads.",
            units.Seconds,
            [
                query(
                    "histogram_quantile(0.99, sum by (le, route) (rate("
                    f"coupon_api_request_duration_seconds_bucket{{{NS}}}[{RATE}])))",
                    "{{route}}",
                )
            ],
            (*GOOD, ("red", 0.05)),
            width=8,
        ),
        timeseries_panel(
            "Broker publish latency (p50 / p95 / p99)",
            "From sending an accepted request to the broker's ack.",
            units.Seconds,
            quantiles("coupon_api_publish_duration_seconds", NS),
            (*GOOD, ("red", 0.025)),
            width=8,
        ),
        timeseries_panel(
            "Requests in flight",
            "HTTP requests being served by all API processes, and the status long-polls among"
            " them that wait for an outcome (they hold a connection, no CPU). The API's KEDA"
            " trigger scales on the difference.",
            units.Short,
            [
                query(f"sum(coupon_api_requests_in_flight{{{NS}}})", "in flight"),
                query(f"sum(coupon_api_long_polls_waiting{{{NS}}})", "long-polls waiting"),
            ],
            width=8,
        ),
        timeseries_panel(
            "Connections cut off by reason",
            "Requests the HTTP connection refused or closed before the app saw them:"
            " head_timeout and body_timeout (a client too slow to send its request, answered"
            " 408 or closed), connection_limit (answered 503 BUSY). The alert fires on a"
            " sustained connection_limit.",
            units.RequestsPerSecond,
            [rate_by("coupon_api_refused_requests_total", "reason", NS)],
            width=24,
        ),
    ]


def _consumers() -> list[Panel]:
    return [
        timeseries_panel(
            "Consumer outcomes/s",
            "Messages processed by outcome: issued, rejected_<reason>, duplicate_delivery,"
            " failed (attempts), dead_lettered.",
            units.OpsPerSecond,
            [rate_by("coupon_consumer_messages_total", "outcome", NS)],
        ),
        timeseries_panel(
            "Failure ratio and dead letters/s",
            "Failed attempts ÷ processed messages (left axis) and messages sent to the DLQ per"
            " second. Any dead letter raises an alert.",
            units.PercentUnit,
            [
                query(_failure_ratio(), "failure ratio"),
                query(_outcome_rate('outcome="dead_lettered"'), "dead letters/s"),
            ],
            (*GOOD, ("red", 0.05)),
        ).override_by_name(
            "dead letters/s",
            [
                dashboard.DynamicConfigValue(id_val="unit", value=units.OpsPerSecond),
                dashboard.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
            ],
        ),
        timeseries_panel(
            "End-to-end latency (p50 / p95 / p99)",
            "From the user's request (requestedAt) to its outcome in PostgreSQL.",
            units.Seconds,
            quantiles("coupon_consumer_end_to_end_seconds", NS),
            (*GOOD, ("orange", 5), ("red", 30)),
            width=8,
        ),
        timeseries_panel(
            "Batch processing time (p50 / p95 / p99)",
            "Time to issue one partition batch in PostgreSQL, transaction included.",
            units.Seconds,
            quantiles("coupon_consumer_batch_duration_seconds", NS),
            (*GOOD, ("red", 0.5)),
            width=8,
        ),
        timeseries_panel(
            "Average batch size and retries/s",
            "Messages per partition batch, and processing retries by kind (transient, data).",
            units.Short,
            [
                query(
                    f"sum(rate(coupon_consumer_batch_size_sum{{{NS}}}[{RATE}]))"
                    f" / sum(rate(coupon_consumer_batch_size_count{{{NS}}}[{RATE}]))",
                    "messages per batch",
                ),
                rate_by("coupon_consumer_retries_total", "kind", NS, "retries/s {{kind}}"),
            ],
            width=8,
        ),
    ]


def _sales() -> list[Panel]:
    return [
        bargauge_panel(
            "Remaining coupons (active sales)",
            "Coupons left per active coupon (newest first, capped by the lag exporter).",
            units.Short,
            [query(f"coupon_remaining_quantity{{{NS}}}", "{{coupon_name}} {{coupon_id}}")],
            (("red", None), ("orange", 1), ("green", 100)),
        ),
        timeseries_panel(
            "Issued coupons (active sales)",
            "Coupons issued per active coupon over time.",
            units.Short,
            [query(f"coupon_issued_quantity{{{NS}}}", "{{coupon_name}} {{coupon_id}}")],
        ),
    ]


def overview() -> dashboard_builder.Dashboard:
    """Requests, API latency, issues, failures and end-to-end latency of coupon-issuer."""
    return new_dashboard(
        "coupon-issuance-overview",
        "Coupon issuance — overview",
        "Requests, API latency, issues, failures and end-to-end latency of coupon-issuer.",
        [
            ("Now", _headline()),
            ("API", _api()),
            ("Consumers", _consumers()),
            ("Sales", _sales()),
        ],
    )
