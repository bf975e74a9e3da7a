"""The scaling policy: table tests for each rule, then properties over random sequences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.autoscaling.observation import Observation, per_replica_rate
from app.autoscaling.policy import (
    Direction,
    History,
    ScalingSpec,
    decide,
    fewest_replicas_like,
    group_throughput,
)

SPEC = ScalingSpec()  # minReplicas 0, drain 30 s, 1000 per replica, window 60 s, poll 5 s
KNOWN = History(started_at=-1000.0, capacity_per_replica=100.0)  # a long, learnt history


def obs(
    lag: tuple[int, ...],
    current: int,
    now: float = 0.0,
    rate: float | None = None,
    arrival: float | None = None,
) -> Observation:
    return Observation(now, lag, current, rate, arrival)


@dataclass(frozen=True)
class Row:
    name: str
    observation: Observation
    spec: ScalingSpec
    history: History | None
    replicas: int
    direction: Direction
    reason_has: str


ROWS = [
    Row("activate on lag", obs((1, 0, 0), 0), SPEC, None, 1, Direction.UP, "activate"),
    Row(
        "below activation stays at zero",
        obs((4, 0, 0), 0),
        ScalingSpec(activation_lag=5),
        None,
        0,
        Direction.HOLD,
        "below activation",
    ),
    Row("idle stays at zero", obs((0, 0, 0), 0), SPEC, None, 0, Direction.HOLD, "idle"),
    Row(
        "capped at partitions",
        obs((10**6,) * 3, 1),
        SPEC,
        None,
        3,
        Direction.UP,
        "capped at 3",
    ),
    Row(
        "capped at maxReplicas",
        obs((10**6,) * 6, 1),
        ScalingSpec(max_replicas=2),
        None,
        2,
        Direction.UP,
        "capped at 2",
    ),
    Row(
        "backlog on one partition needs one consumer",
        obs((100_000, 0, 0, 0), 0),
        SPEC,
        None,
        1,
        Direction.UP,
        "only 1 partitions lag",
    ),
    Row(
        "fallback: lag / lagPerReplica",
        obs((500,) * 4, 1),  # 2000 -> 2 replicas on 4 partitions
        SPEC,
        None,
        2,
        Direction.UP,
        "rate unknown",
    ),
    Row(
        "fallback never picks 4 or 5 consumers for 6 partitions",
        obs((750,) * 6, 1),  # 4500 -> 5 wanted -> 3 own two partitions each, as 5 would
        SPEC,
        None,
        3,
        Direction.UP,
        "rate unknown",
    ),
    Row(
        "drain-time sizing with a learnt rate",
        obs((1000,) * 6, 1, arrival=0.0),  # 6000 in 30 s = 200/s = 2 x 100/s
        SPEC,
        KNOWN,
        2,
        Direction.UP,
        "100/s per replica",
    ),
    Row(
        "arrivals count besides the backlog",
        obs((0,) * 6, 1, arrival=250.0),  # 250/s needs 3 x 100/s
        SPEC,
        KNOWN,
        3,
        Direction.UP,
        "in 250/s",
    ),
    Row(
        "within tolerance holds",
        obs((0,) * 6, 3, arrival=320.0),  # 320/s on 300/s: 7 % short, lag will say if real
        SPEC,
        KNOWN,
        3,
        Direction.HOLD,
        "within tolerance",
    ),
    Row(
        "above the ceiling comes down at once",
        obs((10**6,) * 3, 5),
        SPEC,
        History(started_at=0.0),
        3,
        Direction.DOWN,
        "exceed the ceiling",
    ),
    Row(
        "below minReplicas goes up at once",
        obs((0,) * 3, 0),
        ScalingSpec(min_replicas=2),
        None,
        2,
        Direction.UP,
        "minReplicas",
    ),
    Row(
        "no scale-down without a full window of evidence",
        obs((0,) * 3, 3),
        SPEC,
        None,
        3,
        Direction.HOLD,
        "history shorter",
    ),
    Row(
        "a missing topic changes nothing",
        obs((), 4),
        SPEC,
        None,
        4,
        Direction.HOLD,
        "no partitions",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_decision_table(row: Row) -> None:
    decision = decide(row.observation, row.spec, row.history)
    assert (decision.replicas, decision.direction) == (row.replicas, row.direction), decision
    assert row.reason_has in decision.reason


def run(
    spec: ScalingSpec, lags: Sequence[tuple[int, ...]], start: int, arrival: float | None = None
) -> list[int]:
    """Feed one observation per poll, applying each decision, and return the replica counts."""
    history, current, out = History(), start, []
    for i, lag in enumerate(lags):
        d = decide(obs(lag, current, i * spec.poll_seconds, None, arrival), spec, history)
        history, current = d.history, d.replicas
        out.append(current)
    return out


def test_scale_up_is_immediate_scale_down_waits_for_the_window() -> None:
    busy, idle = (5000,) * 6, (0,) * 6
    counts = run(SPEC, [busy] * 2 + [idle] * 30, start=0)
    assert counts[0] == 6  # lag 30000 / 1000 per replica, capped at 6 partitions
    # Idle from poll 2 (t=10 s): nothing changes until the 60 s window has only zeros in it.
    assert counts[:14] == [6] * 14  # t = 0 .. 65 s
    assert counts[-1] == 0
    first_zero = counts.index(0)
    assert first_zero * SPEC.poll_seconds - 10 >= SPEC.scale_down_stabilization_seconds


def test_scale_to_zero_only_when_min_replicas_is_zero() -> None:
    counts = run(ScalingSpec(min_replicas=1), [(3000,) * 3] + [(0,) * 3] * 40, start=0)
    assert counts[0] == 3
    assert counts[-1] == 1
    assert 0 not in counts


def test_a_single_quiet_poll_does_not_scale_down() -> None:
    lags = [(2000,) * 3, (0,) * 3] * 20  # lag comes and goes every other poll
    counts = run(SPEC, lags, start=0)
    assert set(counts) == {3}


def test_rising_lag_scales_up_at_the_next_poll_after_scaling_down() -> None:
    spec = ScalingSpec(scale_down_stabilization_seconds=10)
    counts = run(spec, [(3000,) * 3] + [(0,) * 3] * 6 + [(3000,) * 3], start=0)
    assert counts[0] == 3 and counts[-2] == 0 and counts[-1] == 3


def test_capacity_is_learnt_only_from_a_saturated_group() -> None:
    idle_group = decide(obs((5, 0, 0), 2, rate=40.0, arrival=80.0), SPEC)
    assert idle_group.history.capacity_per_replica is None  # traffic, not capacity
    busy_group = decide(obs((4000, 4000, 4000), 2, rate=90.0, arrival=50.0), SPEC)
    assert busy_group.history.capacity_per_replica == 90.0
    # Later, an unsaturated but faster group proves the estimate was low.
    faster = decide(obs((0, 0, 0), 2, 5.0, rate=150.0, arrival=300.0), SPEC, busy_group.history)
    assert faster.history.capacity_per_replica is not None
    assert 90.0 < faster.history.capacity_per_replica < 150.0


def test_history_keeps_only_the_window() -> None:
    history = History()
    for i in range(100):
        history = decide(obs((10,) * 3, 1, now=i * 5.0), SPEC, history).history
    times = [t for t, _ in history.recommendations]
    assert min(times) >= 99 * 5.0 - SPEC.scale_down_stabilization_seconds


def test_group_throughput_is_limited_by_the_busiest_consumer() -> None:
    assert group_throughput(3, 6, 100) == group_throughput(4, 6, 100) == 300
    assert group_throughput(6, 6, 100) == group_throughput(9, 6, 100) == 600
    assert [fewest_replicas_like(n, 6) for n in range(1, 8)] == [1, 2, 3, 3, 3, 6, 6]
    assert per_replica_rate(1000, 5, 2) == 100.0
    assert per_replica_rate(1000, 0, 2) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_replicas": -1},
        {"max_replicas": 0},
        {"min_replicas": 3, "max_replicas": 2},
        {"target_drain_seconds": 0},
        {"lag_per_replica": 0},
        {"tolerance": 1.0},
    ],
)
def test_spec_rejects_nonsense(kwargs: dict[str, int | float]) -> None:
    with pytest.raises(ValueError):
        ScalingSpec(**kwargs)


# --- properties ---------------------------------------------------------------------------------

specs = st.builds(
    ScalingSpec,
    min_replicas=st.integers(0, 4),
    max_replicas=st.one_of(st.none(), st.integers(4, 12)),
    target_drain_seconds=st.floats(1, 300),
    lag_per_replica=st.integers(1, 5000),
    activation_lag=st.integers(0, 100),
    scale_down_stabilization_seconds=st.floats(0, 300),
)
polls = st.lists(
    st.tuples(
        st.lists(st.integers(0, 50_000), min_size=1, max_size=1),  # lag on each partition
        st.one_of(st.none(), st.floats(0, 1000)),  # rate per replica
        st.one_of(st.none(), st.floats(0, 5000)),  # arrival rate
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(spec=specs, partitions=st.integers(1, 12), start=st.integers(0, 20), steps=polls)
def test_properties_over_random_sequences(
    spec: ScalingSpec,
    partitions: int,
    start: int,
    steps: list[tuple[list[int], float | None, float | None]],
) -> None:
    history, current, idle_since = History(), start, None
    floor = min(spec.min_replicas, partitions, spec.max_replicas or partitions)
    for i, (seed_lag, rate, arrival) in enumerate(steps):
        lag = tuple((seed_lag[0] * (p + 1)) % 50_001 for p in range(partitions))
        now = i * spec.poll_seconds
        o = Observation(now, lag, current, rate, arrival)
        d = decide(o, spec, history)
        assert d == decide(o, spec, history)  # pure: same inputs, same decision
        ceiling = min(partitions, spec.max_replicas or partitions)
        assert 0 <= d.replicas <= ceiling
        assert d.replicas >= floor
        assert d.reason
        idle = sum(lag) == 0 and not arrival
        idle_since = (idle_since if idle_since is not None else now) if idle else None
        if d.replicas == 0 and current > 0:  # scaled to zero: allowed and earned
            assert spec.min_replicas == 0
            assert idle_since is not None
            assert now - idle_since >= spec.scale_down_stabilization_seconds
        if d.replicas < current and current <= ceiling:  # a voluntary scale-down
            assert now >= spec.scale_down_stabilization_seconds  # only after a full window
        if current == 0 and sum(lag) >= max(spec.activation_lag, 1):
            assert d.replicas >= 1  # activation is never delayed
        history, current = d.history, d.replicas


def hot(arrivals: tuple[int, ...] | None, current: int = 1) -> Observation:
    """A sale on one coupon: its partition lags and takes the new messages; 1250 in 5 s."""
    return Observation(0.0, (6000, 0, 0, 0, 0, 0), current, 100.0, 250.0, arrivals)


def test_lag_and_arrivals_on_one_partition_keep_one_replica() -> None:
    one_coupon = decide(hot((1250, 0, 0, 0, 0, 0)), SPEC, KNOWN)
    assert (one_coupon.replicas, one_coupon.direction) == (1, Direction.HOLD)
    assert "one partition" in one_coupon.reason
    # Already scaled out: back to one, once the usual window of evidence is covered.
    history, counts = History(capacity_per_replica=100.0), []
    for i in range(20):
        observation = Observation(
            i * 5.0, (6000, 0, 0, 0, 0, 0), 6, 100.0, 250.0, (1250,) + (0,) * 5
        )
        decision = decide(observation, SPEC, history)
        history = decision.history
        counts.append(decision.replicas)
    window_polls = int(SPEC.scale_down_stabilization_seconds / SPEC.poll_seconds)
    assert counts[:window_polls] == [6] * window_polls and counts[-1] == 1


def test_traffic_on_more_partitions_or_unknown_spread_scales_out_as_before() -> None:
    unknown = decide(hot(None), SPEC, KNOWN)
    trickle = decide(hot((1200, 10, 10, 10, 10, 10)), SPEC, KNOWN)
    lag_elsewhere = decide(
        Observation(0.0, (6000, 50, 0, 0, 0, 0), 1, 100.0, 250.0, (1250, 0, 0, 0, 0, 0)),
        SPEC,
        KNOWN,
    )
    for decision in (unknown, trickle, lag_elsewhere):
        assert (decision.replicas, decision.direction) == (6, Direction.UP), decision.reason
    assert (
        decide(
            hot((1250,) + (0,) * 5), ScalingSpec(cap_at_lagging_partitions=False), KNOWN
        ).replicas
        == 6
    )
