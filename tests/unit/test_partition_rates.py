"""Per-partition arrival and processing, and the partition skew the lag exporter reports."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from app.adapters.kafka_lag import LagSnapshot, PartitionLag
from app.observability.lag_state import ExporterState
from app.observability.partition_rates import OffsetWindow, busiest_share
from harness import scrape
from tests.prometheus import check_metrics


def test_busiest_share_is_the_hottest_partitions_part_of_the_arrivals() -> None:
    assert busiest_share([30, 5, 5]) == pytest.approx(0.75)
    assert busiest_share([10, 10, 10, 10]) == pytest.approx(0.25)  # even: 1 / partitions
    assert busiest_share([0, 120, 0]) == 1.0  # one hot coupon
    assert busiest_share([7]) == 1.0  # one partition is always the busiest


def test_busiest_share_is_zero_without_arrivals() -> None:
    assert busiest_share([0, 0, 0]) == 0.0
    assert busiest_share([]) == 0.0


def test_offset_window_measures_progress_over_the_window_only() -> None:
    window = OffsetWindow(window_s=60)
    window.observe(0, {0: 100, 1: 0})
    assert window.delta(0) == 0 and window.rate(0) == 0  # one observation: nothing measured
    window.observe(10, {0: 300, 1: 50})
    assert window.delta(0) == 200 and window.rate(0) == pytest.approx(20.0)
    assert window.delta(1) == 50 and window.rate(1) == pytest.approx(5.0)
    for t in range(20, 100, 10):  # quiet for longer than the window: the burst has left it
        window.observe(t, {0: 300, 1: 50})
    assert window.delta(0) == 0 and window.rate(0) == 0
    window.observe(100, {0: 360, 1: 50})
    assert window.delta(0) == 60 and window.rate(0) == pytest.approx(1.0)  # 60 over the 60 s
    window.observe(110, {0: 3, 1: 50})  # offsets reset (topic recreated): start over
    assert window.delta(0) == 0
    assert window.delta(7) == 0 and window.rate(7) == 0  # a partition never seen


def _snapshot(log_ends: list[int], committed: list[int | None]) -> LagSnapshot:
    return LagSnapshot(
        topic="t",
        group="g",
        partitions=tuple(
            PartitionLag(p, 0, end, done)
            for p, (end, done) in enumerate(zip(log_ends, committed, strict=True))
        ),
        members=1,
        taken_at=0.0,
    )


def _exposition(state: ExporterState) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(state)
    return generate_latest(registry).decode()


def test_exporter_reports_offsets_as_counters_and_the_skew_of_the_window() -> None:
    state = ExporterState(rate_window_s=60)
    state.record_lag(0.0, _snapshot([100, 10, 10], [100, None, 10]), {})
    first = scrape(_exposition(state))
    assert first['coupon_topic_partition_skew_ratio{topic="t"}'] == 0  # nothing arrived yet

    # 30 s later: 90 more on partition 0, 5 on each other one; the group processed 40 on 0.
    state.record_lag(30.0, _snapshot([190, 15, 15], [140, None, 15]), {})
    text = _exposition(state)
    samples = scrape(text)
    arrived = {
        p: samples[f'coupon_topic_arrived_messages_total{{partition="{p}",topic="t"}}']
        for p in range(3)
    }
    assert arrived == {0: 190, 1: 15, 2: 15}
    processed = 'coupon_consumer_processed_messages_total{group="g",partition="%d",topic="t"}'
    assert samples[processed % 0] == 140 and samples[processed % 2] == 15
    assert processed % 1 not in samples  # the group never committed there
    assert samples['coupon_topic_partition_skew_ratio{topic="t"}'] == pytest.approx(0.9)
    check_metrics(text)

    # Quiet for longer than the window: no partition is hot any more.
    for t in (60.0, 90.0, 120.0):
        state.record_lag(t, _snapshot([190, 15, 15], [190, 15, 15]), {})
    assert scrape(_exposition(state))['coupon_topic_partition_skew_ratio{topic="t"}'] == 0


def test_a_failed_poll_drops_the_partition_series() -> None:
    state = ExporterState()
    state.record_lag(0.0, _snapshot([5, 5], [5, 5]), {})
    state.record_poll("kafka", False, 0.0, 1.0)
    text = _exposition(state)
    assert "coupon_topic_arrived_messages_total{" not in text
    assert "coupon_topic_partition_skew_ratio{" not in text
