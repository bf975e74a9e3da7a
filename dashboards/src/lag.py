"""Coupon issuance — consumer lag: per-partition lag in messages and seconds, drain time, replicas."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.models import units

from dashboards.src.common import (
    GOOD,
    LAG,
    NS,
    RATE,
    Panel,
    new_dashboard,
    query,
    stat_panel,
    timeseries_panel,
)

FILE = "coupon-lag.json"
PER_PARTITION = "{{topic}}/{{partition}}"


def _members() -> str:
    return f'sum(coupon_consumer_group_members{{{NS}, group=~"$group"}})'


def _partitions() -> str:
    return f'max(coupon_topic_partitions{{{NS}, topic=~"$topic"}})'


def _headline() -> list[Panel]:
    return [
        stat_panel(
            "Total lag",
            "Messages not yet consumed, all partitions.",
            units.Short,
            [query(f"sum(coupon_consumer_lag_messages{{{LAG}}})")],
            (*GOOD, ("orange", 1000), ("red", 10000)),
        ),
        stat_panel(
            "Drain-time estimate",
            "Time until every partition is drained at its recent consume rate (the slowest"
            " partition); ∞ when there is lag and no progress.",
            units.Seconds,
            [query(f"max(coupon_consumer_lag_seconds{{{LAG}}})")],
            (*GOOD, ("orange", 60), ("red", 300)),
        ),
        stat_panel(
            "Oldest unconsumed message",
            "Age of the oldest message still waiting on any partition.",
            units.Seconds,
            [query(f"max(coupon_consumer_lag_oldest_message_age_seconds{{{LAG}}})")],
            (*GOOD, ("orange", 10), ("red", 60)),
        ),
        stat_panel(
            "Group members / partitions",
            "Members of the consumer group vs partitions of the topic: members beyond the"
            " partition count sit idle.",
            units.Short,
            [query(_members(), "members"), query(_partitions(), "partitions")],
        ),
    ]


def _lag() -> list[Panel]:
    return [
        timeseries_panel(
            "Lag per partition (messages)",
            "High watermark minus committed offset, per partition (from the log start when the"
            " group has committed nothing).",
            units.Short,
            [query(f"coupon_consumer_lag_messages{{{LAG}}}", PER_PARTITION)],
            (*GOOD, ("red", 10000)),
        ),
        timeseries_panel(
            "Lag per partition (seconds to drain)",
            "Partition lag ÷ its recent consume rate: the drain-time estimate per partition.",
            units.Seconds,
            [query(f"coupon_consumer_lag_seconds{{{LAG}}}", PER_PARTITION)],
            (*GOOD, ("red", 300)),
        ),
        timeseries_panel(
            "Total lag",
            "Sum of all partitions' lag, per group and topic.",
            units.Short,
            [
                query(
                    f"sum by (group, topic) (coupon_consumer_lag_messages{{{LAG}}})",
                    "{{group}} on {{topic}}",
                )
            ],
            (*GOOD, ("red", 10000)),
            width=8,
        ),
        timeseries_panel(
            "Produce vs consume rate",
            "Messages/s appended to the topic (log-end offsets) and committed by the group.",
            units.OpsPerSecond,
            [
                query(
                    f'sum(deriv(coupon_topic_log_end_offset{{{NS}, topic=~"$topic"}}[{RATE}]))',
                    "produced/s",
                ),
                query(
                    f"sum(deriv(coupon_consumer_committed_offset{{{LAG}}}[{RATE}]))",
                    "consumed/s",
                ),
            ],
            width=8,
        ),
        timeseries_panel(
            "Oldest unconsumed message age per partition",
            "Now minus the timestamp of the record at the committed offset.",
            units.Seconds,
            [query(f"coupon_consumer_lag_oldest_message_age_seconds{{{LAG}}}", PER_PARTITION)],
            (*GOOD, ("red", 60)),
            width=8,
        ),
    ]


def _scaling() -> list[Panel]:
    return [
        timeseries_panel(
            "Consumer replicas vs partitions",
            "Group members (coordinator's view), partitions of the topic, and partitions the"
            " running consumers report as assigned to them.",
            units.Short,
            [
                query(_members(), "members"),
                query(_partitions(), "partitions"),
                query(f"sum(coupon_consumer_assigned_partitions{{{NS}}})", "assigned partitions"),
            ],
            width=8,
        ),
        timeseries_panel(
            "Rebalances",
            "Partition assignments received by consumers, per interval.",
            units.Short,
            [
                query(
                    f"sum(increase(coupon_consumer_rebalances_total{{{NS}}}[{RATE}]))",
                    "rebalances",
                )
            ],
            (*GOOD, ("orange", 5)),
            width=8,
        ),
        timeseries_panel(
            "Lag exporter freshness",
            "Seconds since the lag exporter last read the broker successfully.",
            units.Seconds,
            [
                query(
                    "time() - max(coupon_lag_exporter_last_success_timestamp_seconds"
                    f'{{{NS}, source="kafka"}})',
                    "seconds since last poll",
                )
            ],
            (*GOOD, ("red", 60)),
            width=8,
        ),
    ]


def consumer_lag() -> dashboard_builder.Dashboard:
    """How far behind the issue workers are, how fast they drain, and how many are running."""
    return new_dashboard(
        "coupon-consumer-lag",
        "Coupon issuance — consumer lag",
        "How far behind the issue workers are, how fast they drain, and how many are running.",
        [("Now", _headline()), ("Lag", _lag()), ("Scaling", _scaling())],
    )
