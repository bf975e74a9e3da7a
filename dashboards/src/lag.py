"""Coupon issuance — consumer lag: per-partition lag, drain time, hot partitions, replicas."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.models import units

from dashboards.src.common import (
    GOOD,
    LAG,
    NS,
    RATE,
    Panel,
    bargauge_panel,
    new_dashboard,
    query,
    stat_panel,
    timeseries_panel,
)

FILE = "coupon-lag.json"
PER_PARTITION = "{{topic}}/{{partition}}"
TOPIC = f'{NS}, topic=~"$topic"'
# The alert CouponPartitionHot fires above HOT (dashboards/alerts.yml); all traffic on one
# partition (one coupon) reads 1.
HOT, ONE_KEY = 0.5, 0.9


def _members() -> str:
    return f'sum(coupon_consumer_group_members{{{NS}, group=~"$group"}})'


def _partitions() -> str:
    return f"max(coupon_topic_partitions{{{TOPIC}}})"


def _arrivals(by: str) -> str:
    return f"sum by ({by}) (rate(coupon_topic_arrived_messages_total{{{TOPIC}}}[{RATE}]))"


def _processed(by: str) -> str:
    return f"sum by ({by}) (rate(coupon_consumer_processed_messages_total{{{LAG}}}[{RATE}]))"


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
                query(f"sum({_arrivals('topic')})", "produced/s"),
                query(f"sum({_processed('group, topic')})", "consumed/s"),
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


def _hot_partitions() -> list[Panel]:
    skew = f"max(coupon_topic_partition_skew_ratio{{{TOPIC}}})"
    return [
        stat_panel(
            "Busiest partition's share",
            "Share of the last minute's requests that went to the busiest partition. A coupon"
            " id is the message key: one popular coupon is one partition and one consumer, however"
            " many consumers run. 1/partitions is an even spread; 1 is a single hot coupon;"
            " 0 means nothing arrived.",
            units.PercentUnit,
            [query(skew)],
            (*GOOD, ("orange", HOT), ("red", ONE_KEY)),
        ).height(8),  # as tall as the rates beside it
        timeseries_panel(
            "Arrival vs processing rate per partition",
            "Messages/s appended to each partition (in) and committed by the group on it (done)."
            " A partition whose in stays above its done is limited by its one consumer: more"
            " consumers do not help it.",
            units.OpsPerSecond,
            [
                query(_arrivals("topic, partition"), "in {{topic}}/{{partition}}"),
                query(_processed("topic, partition"), "done {{topic}}/{{partition}}"),
            ],
            width=18,
        ),
        timeseries_panel(
            "Partition skew vs an even spread",
            "The busiest partition's share of arrivals over time, and the share each partition"
            " would have if requests spread evenly (1 / partitions).",
            units.PercentUnit,
            [query(skew, "busiest partition"), query(f"1 / {_partitions()}", "even spread")],
            (*GOOD, ("orange", HOT), ("red", ONE_KEY)),
        ),
        bargauge_panel(
            "Arrivals per partition",
            "Messages/s appended to each partition now: the hot partition stands out.",
            units.OpsPerSecond,
            [query(_arrivals("topic, partition"), PER_PARTITION)],
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
    """How far behind the issue workers are, how fast they drain, where requests land, how many run."""
    return new_dashboard(
        "coupon-consumer-lag",
        "Coupon issuance — consumer lag",
        "How far behind the issue workers are, how fast they drain, which partitions the"
        " requests land on, and how many workers are running.",
        [
            ("Now", _headline()),
            ("Lag", _lag()),
            ("Hot partitions", _hot_partitions()),
            ("Scaling", _scaling()),
        ],
    )
