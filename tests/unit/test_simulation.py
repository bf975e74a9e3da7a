"""The policy against a KEDA-style rule on the same simulated traffic (numbers are measured)."""

from __future__ import annotations

import pytest

from app.autoscaling.policy import ScalingSpec
from app.autoscaling.simulation import (
    CAPACITY,
    SALE_RATE,
    SALE_SECONDS,
    SALE_START,
    KedaScaler,
    PolicyScaler,
    Result,
    Scenario,
    compare,
    format_hot_table,
    format_table,
    hot_coupon_scenarios,
    scenarios,
    simulate,
)

SPEC = ScalingSpec()


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, str], Result]:
    rows = compare(SPEC)
    print("\n" + format_table(rows))  # visible with -s: the numbers the README quotes
    return {(r.scenario, r.scaler): r for r in rows}


@pytest.mark.parametrize("scenario", [s.name for s in scenarios()])
def test_never_above_the_partitions(results: dict[tuple[str, str], Result], scenario: str) -> None:
    partitions = next(s.partitions for s in scenarios() if s.name == scenario)
    for scaler in ("policy", "keda-style"):
        assert results[scenario, scaler].max_replicas <= partitions


@pytest.mark.parametrize("scenario", ["burst", "steady", "drain", "noisy"])
def test_reacts_within_one_poll_interval(
    results: dict[tuple[str, str], Result], scenario: str
) -> None:
    ours = results[scenario, "policy"]
    assert ours.reaction_seconds is not None
    assert ours.reaction_seconds <= SPEC.poll_seconds


def test_reacts_faster_than_keda_style(results: dict[tuple[str, str], Result]) -> None:
    rising = ["burst", "steady", "drain", "noisy"]
    for name in rising:
        ours, keda = results[name, "policy"], results[name, "keda-style"]
        assert ours.reaction_seconds is not None and keda.reaction_seconds is not None
        assert ours.reaction_seconds <= keda.reaction_seconds, name
    assert sum(results[n, "policy"].reaction_seconds or 0 for n in rising) < sum(
        results[n, "keda-style"].reaction_seconds or 0 for n in rising
    )


def test_flaps_less_than_keda_style(results: dict[tuple[str, str], Result]) -> None:
    names = [s.name for s in scenarios()]
    for name in names:
        assert results[name, "policy"].flaps <= results[name, "keda-style"].flaps, name
    assert sum(results[n, "policy"].flaps for n in names) < sum(
        results[n, "keda-style"].flaps for n in names
    )


def test_no_flapping_on_noisy_or_steady_input(results: dict[tuple[str, str], Result]) -> None:
    for name in ("noisy", "steady"):
        ours = results[name, "policy"]
        assert ours.flaps == 0, ours.events
        # Once it has caught up, the count stays put for the rest of the run.
        last_change = ours.events[-1][0]
        assert last_change < 300, ours.events


def test_costs_fewer_replica_seconds_and_keeps_messages_waiting_less(
    results: dict[tuple[str, str], Result],
) -> None:
    for name in [s.name for s in scenarios()]:
        ours, keda = results[name, "policy"], results[name, "keda-style"]
        assert ours.replica_seconds <= keda.replica_seconds, name
        assert ours.mean_wait_seconds <= keda.mean_wait_seconds + 0.01, name


def test_backlogs_drain(results: dict[tuple[str, str], Result]) -> None:
    for name in ("burst", "drain"):
        assert results[name, "policy"].final_lag == 0


def test_scales_to_zero_only_after_the_cooldown(results: dict[tuple[str, str], Result]) -> None:
    window = int(SPEC.scale_down_stabilization_seconds)
    for scenario in scenarios():
        ours = results[scenario.name, "policy"]
        for t, before, after, _ in ours.events:
            if after == 0:
                assert before > 0
                quiet = range(t - window, t + 1)
                assert all(ours.lags[s] == 0 for s in quiet), scenario.name
                assert all(scenario.arrivals[s] == 0 for s in quiet), scenario.name
    burst = results["burst", "policy"]
    assert burst.replicas[-1] == 0  # and it does get there when allowed


def test_min_replicas_one_never_scales_to_zero() -> None:
    spec = ScalingSpec(min_replicas=1)
    for scenario in scenarios():
        result = simulate(scenario, PolicyScaler(spec))
        after_start = result.replicas[scenario.load_rises_at or 0 :]
        assert 0 not in after_start[int(SPEC.poll_seconds) :], scenario.name


def test_keda_style_rule_is_keda_kafka_scaler_with_hpa_defaults() -> None:
    flat = (100,) * 400
    burst = tuple(3000 if t == 40 else 0 for t in range(400))
    result = simulate(Scenario("one-burst", burst, flat, load_rises_at=40), KedaScaler())
    assert result.events[0][:3] == (60, 0, 3)  # polled at 60 s: ceil(3000 / 1000)
    assert result.events[-1][2] == 0
    assert result.events[-1][0] >= 60 + 300 - 30  # the cooldown, measured from last lag seen


@pytest.fixture(scope="module")
def hot() -> dict[tuple[str, str], Result]:
    rows = compare(SPEC, among=hot_coupon_scenarios())
    print("\n" + format_hot_table(rows))  # visible with -s: the numbers docs/autoscaling.md quotes
    return {(r.scenario, r.scaler): r for r in rows}


def _drain_seconds(result: Result) -> int:
    assert result.drained_at is not None, f"{result.scenario}: lag left at the end"
    return result.drained_at - SALE_START


def test_one_coupon_drains_at_one_consumers_pace_whatever_the_replicas(
    hot: dict[tuple[str, str], Result],
) -> None:
    one_consumer = SALE_RATE * SALE_SECONDS / CAPACITY  # the whole sale through one partition
    for scaler in ("policy", "keda-style"):
        assert _drain_seconds(hot["one coupon", scaler]) >= one_consumer
    # Six replicas (KEDA-style) drain it no sooner than the policy's one.
    ours, keda = hot["one coupon", "policy"], hot["one coupon", "keda-style"]
    assert keda.max_replicas == 6 and ours.max_replicas == 1
    assert _drain_seconds(ours) <= _drain_seconds(keda)
    # One replica while there is work, then the usual scale-down window: nothing idles beside it.
    window = SPEC.scale_down_stabilization_seconds + 2 * SPEC.poll_seconds
    assert ours.replica_seconds <= _drain_seconds(ours) + window


def test_splitting_the_sale_over_coupon_ids_spreads_it_over_consumers(
    hot: dict[tuple[str, str], Result],
) -> None:
    one, split = hot["one coupon", "policy"], hot["3 coupon ids", "policy"]
    assert split.max_replicas == 3  # one consumer per partition with traffic, no more
    assert _drain_seconds(split) <= SALE_SECONDS + 10  # keeps up with the sale
    assert _drain_seconds(one) >= 2 * SALE_SECONDS
    assert split.mean_wait_seconds * 5 < one.mean_wait_seconds
    assert _drain_seconds(hot["many coupons", "policy"]) <= SALE_SECONDS + 10
