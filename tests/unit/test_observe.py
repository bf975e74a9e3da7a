"""observe(): the one rule, shared by the operator, dev mode and the simulation, for measured rates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.autoscaling.observation import Observation, Reading, observe


@dataclass(frozen=True)
class Group:
    """What a lag read reports (the fields of LagSnapshot that the policy uses)."""

    lag_per_partition: tuple[int, ...]
    consumed_total: int
    produced_total: int
    members: int | None
    log_end_per_partition: tuple[int, ...] = ()  # () : per-partition arrivals unknown


def run(
    polls: Sequence[tuple[float, int, int | None, int, int]], partitions: int = 2
) -> list[Observation]:
    """Observations of (now, replicas, members, consumed_total, produced_total) polls, in order."""
    observations, previous = [], None
    for now, replicas, members, consumed, produced in polls:
        group = Group((produced - consumed,) + (0,) * (partitions - 1), consumed, produced, members)
        observation, previous = observe(Reading(now, group, replicas), previous)
        observations.append(observation)
    return observations


def test_first_poll_measures_nothing_then_arrivals_and_rates_of_a_settled_group() -> None:
    first, second, third = run([(0, 2, 2, 0, 0), (5, 2, 2, 1000, 1500), (10, 2, 2, 2000, 2000)])
    assert (first.rate_per_replica, first.arrival_rate) == (None, None)
    # The group was first seen at the second poll's start: it may have just rebalanced.
    assert (second.rate_per_replica, second.arrival_rate) == (None, 300.0)
    assert (third.rate_per_replica, third.arrival_rate) == (100.0, 100.0)  # 1000 / 5 s / 2
    assert third.lag_per_partition == (0, 0) and third.current_replicas == 2


def test_no_rate_across_a_scale_nor_in_the_interval_after_it() -> None:
    polls = [
        (0, 2, 2, 0, 0),
        (5, 2, 2, 1000, 1000),
        (10, 2, 2, 2000, 2000),  # settled: measured
        (15, 3, 2, 3000, 3000),  # asked for 3, one not in yet
        (20, 3, 3, 4000, 4000),  # all three are members, but the rebalance may still run
        (25, 3, 3, 5500, 5500),  # unchanged only since the poll at 20: not yet
        (30, 3, 3, 7000, 7000),  # unchanged at 20, 25 and 30: measured again
    ]
    observations = run(polls)
    assert [o.rate_per_replica for o in observations] == [None, None, 100, None, None, None, 100]
    arrivals = [o.arrival_rate for o in observations]
    assert arrivals == [None, 200, 200, 200, 200, 300, 300]  # arrivals need no settled group


def test_members_short_of_the_replicas_or_changing_mean_no_rate() -> None:
    short = run([(0, 3, 2, 0, 0), (5, 3, 2, 500, 500), (10, 3, 2, 1000, 1000)])
    assert [o.rate_per_replica for o in short] == [None, None, None]
    churn = run([(0, 2, 2, 0, 0), (5, 2, 1, 500, 500), (10, 2, 2, 1000, 1000)])
    assert [o.rate_per_replica for o in churn] == [None, None, None]


def test_unknown_members_fall_back_to_the_replica_count() -> None:
    rates = [
        o.rate_per_replica
        for o in run([(0, 2, None, 0, 0), (5, 2, None, 1000, 1000), (10, 2, None, 2000, 2000)])
    ]
    assert rates == [None, None, 100.0]


def test_added_partitions_or_a_clock_standing_still_measure_nothing() -> None:
    group = Group((0, 0), 0, 0, 1)
    _, previous = observe(Reading(0, group, 1), None)
    _, previous = observe(Reading(5, group, 1), previous)
    wider = Group((0, 0, 0), 500, 500, 1)
    observation, _ = observe(Reading(10, wider, 1), previous)
    assert (observation.rate_per_replica, observation.arrival_rate) == (None, None)
    moved = Group((0, 0), 500, 500, 1)
    observation, _ = observe(Reading(5, moved, 1), previous)
    assert (observation.rate_per_replica, observation.arrival_rate) == (None, None)


def test_arrivals_per_partition_are_the_log_end_deltas_of_the_same_partitions() -> None:
    before = Group((0, 0, 0), 0, 30, 1, (10, 10, 10))
    after = Group((50, 0, 0), 0, 90, 1, (65, 12, 13))
    _, previous = observe(Reading(0, before, 1), None)
    observation, _ = observe(Reading(5, after, 1), previous)
    assert observation.arrivals_per_partition == (55, 2, 3)
    assert observation.busy_partitions == 3
    one = Group((50, 0, 0), 0, 150, 1, (125, 12, 13))
    observation, _ = observe(Reading(10, one, 1), observe(Reading(5, after, 1), previous)[1])
    assert (observation.arrivals_per_partition, observation.busy_partitions) == ((60, 0, 0), 1)
    first, _ = observe(Reading(0, before, 1), None)
    assert first.arrivals_per_partition is None and first.busy_partitions is None
    unknown, _ = observe(Reading(5, Group((0, 0, 0), 0, 30, 1), 1), previous)
    assert unknown.arrivals_per_partition is None  # a reader that does not report log ends
