"""The Grafana dashboards, as code: ``python -m app.observability.dashboards`` writes dashboards/*.json.

tests/unit/test_dashboards.py fails when the checked-in JSON differs from what this renders, and
tests/e2e/test_prometheus.py asks a real Prometheus for every expression in it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.observability.grafana import (
    Json,
    Panel,
    Query,
    dashboard,
    layout,
    query_variable,
    threshold_steps,
)

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboards"
ISSUE_ROUTE = "/api/coupons/{coupon_id}/issue/queue"
RATE = "$__rate_interval"
NS = 'namespace=~"$namespace"'
LAG = 'namespace=~"$namespace", group=~"$group", topic=~"$topic"'
GOOD = ("green", None)


def _variables() -> list[Json]:
    return [
        query_variable(
            "namespace",
            "Namespace",
            "coupon_api_issue_requests_total",
            "Kubernetes namespace (added by the Prometheus Operator); All also matches none.",
        ),
        query_variable(
            "group",
            "Consumer group",
            f"coupon_consumer_lag_messages{{{NS}}}",
            "Consumer group of the issue workers, as reported by the lag exporter.",
        ),
        query_variable(
            "topic",
            "Topic",
            f'coupon_consumer_lag_messages{{{NS}, group=~"$group"}}',
            "Request topic, as reported by the lag exporter.",
        ),
    ]


def _quantiles(metric: str, selector: str, by: str = "") -> tuple[Query, ...]:
    grouping = f"le{', ' + by if by else ''}"
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({grouping}) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    )


def _outcome_rate(selector: str) -> str:
    return f"sum(rate(coupon_consumer_messages_total{{{NS}, {selector}}}[{RATE}]))"


def _failure_ratio() -> str:
    # A dead letter follows its failed attempts; counting it too would count the message twice.
    failed = _outcome_rate('outcome="failed"')
    processed = _outcome_rate('outcome!="dead_lettered"')
    return f"{failed} / {processed}"


def overview() -> Json:
    """Coupon issuance — overview: requests, API latency, issues, failures, end-to-end latency."""
    api_route = f'{NS}, route="{ISSUE_ROUTE}"'
    headline = [
        Panel(
            "Accepted requests/s",
            "Issue requests admitted by the Redis gate and acknowledged by the broker.",
            (
                Query(
                    f'sum(rate(coupon_api_issue_requests_total{{{NS}, outcome="accepted"}}[{RATE}]))'
                ),
            ),
            "reqps",
            kind="stat",
            width=6,
            height=5,
        ),
        Panel(
            "Issued/s",
            "Coupons issued in PostgreSQL by the consumers.",
            (Query(_outcome_rate('outcome="issued"')),),
            "ops",
            kind="stat",
            width=6,
            height=5,
        ),
        Panel(
            "Failure ratio",
            "Failed processing attempts ÷ processed messages (every outcome but dead_lettered).",
            (Query(_failure_ratio()),),
            "percentunit",
            kind="stat",
            thresholds=threshold_steps(GOOD, ("orange", 0.01), ("red", 0.05)),
            width=6,
            height=5,
            decimals=2,
        ),
        Panel(
            "Total consumer lag",
            "Messages queued and not yet consumed, all partitions (from the lag exporter).",
            (Query(f"sum(coupon_consumer_lag_messages{{{LAG}}})"),),
            "short",
            kind="stat",
            thresholds=threshold_steps(GOOD, ("orange", 1000), ("red", 10000)),
            width=6,
            height=5,
        ),
    ]
    api = [
        Panel(
            "Issue requests/s by outcome",
            "Accepted vs rejected presses by reason (duplicate, sold_out, expired, not_found,"
            " broker_unavailable, rate_limited, unauthorized).",
            (
                Query(
                    f"sum by (outcome) (rate(coupon_api_issue_requests_total{{{NS}}}[{RATE}]))",
                    "{{outcome}}",
                ),
            ),
            "reqps",
        ),
        Panel(
            "Issue API latency (p50 / p95 / p99)",
            "Latency of POST /api/coupons/{id}/issue/queue measured in the API; the alert fires"
            " on p99 above 50 ms.",
            _quantiles("coupon_api_request_duration_seconds", api_route),
            "s",
            thresholds=threshold_steps(GOOD, ("red", 0.05)),
        ),
        Panel(
            "API p99 latency by route",
            "p99 of every route, to tell the hot path from admin and status reads.",
            (
                Query(
                    "histogram_quantile(0.99, sum by (le, route) (rate("
                    f"coupon_api_request_duration_seconds_bucket{{{NS}}}[{RATE}])))",
                    "{{route}}",
                ),
            ),
            "s",
            thresholds=threshold_steps(GOOD, ("red", 0.05)),
            width=8,
        ),
        Panel(
            "Broker publish latency (p50 / p95 / p99)",
            "From sending an accepted request to the broker's ack.",
            _quantiles("coupon_api_publish_duration_seconds", NS),
            "s",
            thresholds=threshold_steps(GOOD, ("red", 0.025)),
            width=8,
        ),
        Panel(
            "Requests in flight",
            "HTTP requests being served by all API processes.",
            (Query(f"sum(coupon_api_requests_in_flight{{{NS}}})", "in flight"),),
            "short",
            width=8,
        ),
    ]
    consumer = [
        Panel(
            "Consumer outcomes/s",
            "Messages processed by outcome: issued, rejected_<reason>, duplicate_delivery,"
            " failed (attempts), dead_lettered.",
            (
                Query(
                    f"sum by (outcome) (rate(coupon_consumer_messages_total{{{NS}}}[{RATE}]))",
                    "{{outcome}}",
                ),
            ),
            "ops",
        ),
        Panel(
            "Failure ratio and dead letters/s",
            "Failed attempts ÷ processed messages (left axis) and messages sent to the DLQ per"
            " second. Any dead letter raises an alert.",
            (
                Query(_failure_ratio(), "failure ratio"),
                Query(_outcome_rate('outcome="dead_lettered"'), "dead letters/s"),
            ),
            "percentunit",
            thresholds=threshold_steps(GOOD, ("red", 0.05)),
            overrides=(
                {
                    "matcher": {"id": "byName", "options": "dead letters/s"},
                    "properties": [
                        {"id": "unit", "value": "ops"},
                        {"id": "custom.axisPlacement", "value": "right"},
                    ],
                },
            ),
        ),
        Panel(
            "End-to-end latency (p50 / p95 / p99)",
            "From the user's request (requestedAt) to its outcome in PostgreSQL.",
            _quantiles("coupon_consumer_end_to_end_seconds", NS),
            "s",
            thresholds=threshold_steps(GOOD, ("orange", 5), ("red", 30)),
            width=8,
        ),
        Panel(
            "Batch processing time (p50 / p95 / p99)",
            "Time to issue one partition batch in PostgreSQL, transaction included.",
            _quantiles("coupon_consumer_batch_duration_seconds", NS),
            "s",
            thresholds=threshold_steps(GOOD, ("red", 0.5)),
            width=8,
        ),
        Panel(
            "Average batch size and retries/s",
            "Messages per partition batch, and processing retries by kind (transient, data).",
            (
                Query(
                    f"sum(rate(coupon_consumer_batch_size_sum{{{NS}}}[{RATE}]))"
                    f" / sum(rate(coupon_consumer_batch_size_count{{{NS}}}[{RATE}]))",
                    "messages per batch",
                ),
                Query(
                    f"sum by (kind) (rate(coupon_consumer_retries_total{{{NS}}}[{RATE}]))",
                    "retries/s {{kind}}",
                ),
            ),
            "short",
            width=8,
        ),
    ]
    sale = [
        Panel(
            "Remaining coupons (active sales)",
            "Coupons left per active coupon (newest first, capped by the lag exporter).",
            (
                Query(
                    f"coupon_remaining_quantity{{{NS}}}",
                    "{{coupon_name}} {{coupon_id}}",
                ),
            ),
            "short",
            kind="bargauge",
            thresholds=threshold_steps(("red", None), ("orange", 1), ("green", 100)),
        ),
        Panel(
            "Issued coupons (active sales)",
            "Coupons issued per active coupon over time.",
            (
                Query(
                    f"coupon_issued_quantity{{{NS}}}",
                    "{{coupon_name}} {{coupon_id}}",
                ),
            ),
            "short",
        ),
    ]
    return dashboard(
        "coupon-issuance-overview",
        "Coupon issuance — overview",
        "Requests, API latency, issues, failures and end-to-end latency of coupon-issuer.",
        _variables(),
        layout(
            [
                ("Now", headline),
                ("API", api),
                ("Consumers", consumer),
                ("Sales", sale),
            ]
        ),
    )


def consumer_lag() -> Json:
    """Consumer lag: total and per partition (messages and seconds), drain time, replicas."""
    per_partition = "{{topic}}/{{partition}}"
    headline = [
        Panel(
            "Total lag",
            "Messages not yet consumed, all partitions.",
            (Query(f"sum(coupon_consumer_lag_messages{{{LAG}}})"),),
            "short",
            kind="stat",
            thresholds=threshold_steps(GOOD, ("orange", 1000), ("red", 10000)),
            width=6,
            height=5,
        ),
        Panel(
            "Drain-time estimate",
            "Time until every partition is drained at its recent consume rate (the slowest"
            " partition); ∞ when there is lag and no progress.",
            (Query(f"max(coupon_consumer_lag_seconds{{{LAG}}})"),),
            "s",
            kind="stat",
            thresholds=threshold_steps(GOOD, ("orange", 60), ("red", 300)),
            width=6,
            height=5,
        ),
        Panel(
            "Oldest unconsumed message",
            "Age of the oldest message still waiting on any partition.",
            (Query(f"max(coupon_consumer_lag_oldest_message_age_seconds{{{LAG}}})"),),
            "s",
            kind="stat",
            thresholds=threshold_steps(GOOD, ("orange", 10), ("red", 60)),
            width=6,
            height=5,
        ),
        Panel(
            "Group members / partitions",
            "Members of the consumer group vs partitions of the topic: members beyond the"
            " partition count sit idle.",
            (
                Query(f'sum(coupon_consumer_group_members{{{NS}, group=~"$group"}})', "members"),
                Query(f'max(coupon_topic_partitions{{{NS}, topic=~"$topic"}})', "partitions"),
            ),
            "short",
            kind="stat",
            width=6,
            height=5,
        ),
    ]
    lag = [
        Panel(
            "Lag per partition (messages)",
            "High watermark minus committed offset, per partition (from the log start when the"
            " group has committed nothing).",
            (Query(f"coupon_consumer_lag_messages{{{LAG}}}", per_partition),),
            "short",
            thresholds=threshold_steps(GOOD, ("red", 10000)),
        ),
        Panel(
            "Lag per partition (seconds to drain)",
            "Partition lag ÷ its recent consume rate: the drain-time estimate per partition.",
            (Query(f"coupon_consumer_lag_seconds{{{LAG}}}", per_partition),),
            "s",
            thresholds=threshold_steps(GOOD, ("red", 300)),
        ),
        Panel(
            "Total lag",
            "Sum of all partitions' lag, per group and topic.",
            (
                Query(
                    f"sum by (group, topic) (coupon_consumer_lag_messages{{{LAG}}})",
                    "{{group}} on {{topic}}",
                ),
            ),
            "short",
            thresholds=threshold_steps(GOOD, ("red", 10000)),
            width=8,
        ),
        Panel(
            "Produce vs consume rate",
            "Messages/s appended to the topic (log-end offsets) and committed by the group.",
            (
                Query(
                    f'sum(deriv(coupon_topic_log_end_offset{{{NS}, topic=~"$topic"}}[{RATE}]))',
                    "produced/s",
                ),
                Query(
                    f"sum(deriv(coupon_consumer_committed_offset{{{LAG}}}[{RATE}]))",
                    "consumed/s",
                ),
            ),
            "ops",
            width=8,
        ),
        Panel(
            "Oldest unconsumed message age per partition",
            "Now minus the timestamp of the record at the committed offset.",
            (Query(f"coupon_consumer_lag_oldest_message_age_seconds{{{LAG}}}", per_partition),),
            "s",
            thresholds=threshold_steps(GOOD, ("red", 60)),
            width=8,
        ),
    ]
    scaling = [
        Panel(
            "Consumer replicas vs partitions",
            "Group members (coordinator's view), partitions of the topic, and partitions the"
            " running consumers report as assigned to them.",
            (
                Query(f'sum(coupon_consumer_group_members{{{NS}, group=~"$group"}})', "members"),
                Query(f'max(coupon_topic_partitions{{{NS}, topic=~"$topic"}})', "partitions"),
                Query(
                    f"sum(coupon_consumer_assigned_partitions{{{NS}}})",
                    "assigned partitions",
                ),
            ),
            "short",
            width=8,
        ),
        Panel(
            "Rebalances",
            "Partition assignments received by consumers, per interval.",
            (
                Query(
                    f"sum(increase(coupon_consumer_rebalances_total{{{NS}}}[{RATE}]))",
                    "rebalances",
                ),
            ),
            "short",
            thresholds=threshold_steps(GOOD, ("orange", 5)),
            width=8,
        ),
        Panel(
            "Lag exporter freshness",
            "Seconds since the lag exporter last read the broker successfully.",
            (
                Query(
                    "time() - max(coupon_lag_exporter_last_success_timestamp_seconds"
                    f'{{{NS}, source="kafka"}})',
                    "seconds since last poll",
                ),
            ),
            "s",
            thresholds=threshold_steps(GOOD, ("red", 60)),
            width=8,
        ),
    ]
    return dashboard(
        "coupon-consumer-lag",
        "Coupon issuance — consumer lag",
        "How far behind the issue workers are, how fast they drain, and how many are running.",
        _variables(),
        layout([("Now", headline), ("Lag", lag), ("Scaling", scaling)]),
    )


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard (stable: sorted keys, two-space indent)."""
    boards = {"coupon-overview.json": overview(), "coupon-lag.json": consumer_lag()}
    return {
        name: json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, board in boards.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are stale")
    args = parser.parse_args(argv)
    stale = [
        name
        for name, text in render().items()
        if not (args.out / name).exists() or (args.out / name).read_text() != text
    ]
    if args.check:
        for name in stale:
            print(f"stale: {args.out / name} (run `make dashboards`)", file=sys.stderr)
        return 1 if stale else 0
    for name, text in render().items():
        (args.out / name).write_text(text)
    print(f"wrote {', '.join(sorted(render()))} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
