"""The scaling policy: lag observations in, desired replicas and a reason out. Pure, no I/O.

Two functions are shared by the Kubernetes operator, the dev-mode scaler and the simulation:
:func:`observe` (app/autoscaling/observation.py) turns consecutive :class:`Reading` values into the
:class:`Observation` the policy reads (so what counts as a measured rate is decided once), and
:func:`decide` turns that into a :class:`ScalingDecision`. The policy's memory is an explicit
:class:`History` value passed in and returned, so the caller chooses where it lives (the operator
daemon's loop state, the dev-mode scaler, a test variable) and a decision can be replayed.

Sizing rule: replicas = ceil((arrival_rate + lag / targetDrainSeconds) / capacity_per_replica),
i.e. enough consumers to keep up with new messages *and* drain the backlog within the target.
Capacity is learnt from the consume rate measured while there was a backlog (only then were the
consumers busy, so only then is "messages consumed per second" their capacity, not the traffic).
Until a capacity is known the rule falls back to ceil(lag / lagPerReplica). A partition has one
consumer, so the count is capped at the partitions, at those with lag when nothing arrives, and at
one when the lag and the arrivals all sit on one partition (a single hot coupon).

Stability: scale up at once; scale down to the highest recommendation of the last
``scale_down_stabilization_seconds`` (the HPA's rule), only once the history covers that window;
changes within ``tolerance`` of the current count are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

# The policy's input is built in observation.py.
from app.autoscaling.observation import Observation


class Direction(StrEnum):
    """What a decision does to the replica count."""

    UP = "up"
    DOWN = "down"
    HOLD = "hold"


CAMEL_CASE = ConfigDict(
    alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, frozen=True
)


class ScalingSpec(BaseModel):
    """The knobs of a ConsumerAutoscaler: its ``spec`` (camelCase there), defaults and bounds.

    The one source of these defaults: the CRD schema and the chart's values.yaml repeat them for
    ``kubectl explain`` and ``helm install``, and tests/unit/test_autoscaler_defaults.py checks
    that they agree with this model.
    """

    model_config = CAMEL_CASE

    min_replicas: int = Field(0, ge=0)
    max_replicas: int | None = Field(None, ge=1)  # None: the partition count
    target_drain_seconds: float = Field(30.0, ge=1)
    lag_per_replica: int = Field(1000, ge=1)
    activation_lag: int = Field(1, ge=0)
    scale_down_stabilization_seconds: float = Field(60.0, ge=0)
    poll_seconds: float = Field(5.0, ge=1)
    # Tuning, not in the CRD:
    # Replicas beyond the partitions that hold the backlog get no work when nothing new arrives;
    # beyond one when the backlog and the arrivals all sit on one partition (one hot coupon).
    cap_at_lagging_partitions: bool = True
    # Relative change below which the count is left alone (the HPA's 10 %): avoids 3 -> 4 -> 3
    # when the need hovers at 3.05.
    tolerance: float = Field(0.1, ge=0, lt=1)
    # Weight of the newest sample in the capacity and arrival estimates (noise damping).
    rate_smoothing: float = Field(0.3, gt=0, le=1)

    @model_validator(mode="after")
    def _max_not_below_min(self) -> ScalingSpec:
        if self.max_replicas is not None and self.max_replicas < max(1, self.min_replicas):
            raise ValueError("maxReplicas must be >= max(1, minReplicas)")
        return self


@dataclass(frozen=True, slots=True)
class History:
    """The policy's memory between polls; returned in every :class:`ScalingDecision`."""

    started_at: float | None = None  # first observation: the window is "covered" after it
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, raw recommendation) in window
    capacity_per_replica: float | None = None  # learnt messages/s one busy replica can do
    idle_since: float | None = None  # since when lag is 0 and nothing arrives
    last_lag: int | None = None  # total lag at the previous poll
    arrival_rate: float | None = None  # smoothed messages/s produced


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    """The outcome of one poll: the count to run, why, and the history for the next poll."""

    replicas: int
    reason: str
    direction: Direction
    recommended: int  # before stabilization
    ceiling: int  # partitions capped by maxReplicas
    history: History = field(repr=False)
    lag: int = 0
    drain_seconds: float | None = None  # backlog / capacity of the current replicas


def decide(obs: Observation, spec: ScalingSpec, history: History | None = None) -> ScalingDecision:
    """Desired replicas for ``obs`` under ``spec``, with a reason and the next history."""
    history = history or History()
    started = history.started_at if history.started_at is not None else obs.now
    lag, current = obs.total_lag, obs.current_replicas
    if obs.partitions == 0:
        # A missing topic is a fault for the caller to report, never a reason to scale to zero.
        return ScalingDecision(
            current, "hold: the topic has no partitions", Direction.HOLD, current, 0, history, lag
        )
    ceiling = _ceiling(obs, spec)
    floor = min(spec.min_replicas, ceiling)

    capacity = _learn_capacity(history, obs, spec)
    arrival = obs.arrival_rate or 0.0
    smoothed = _smooth_arrivals(history.arrival_rate, obs.arrival_rate, spec)
    idle = lag == 0 and arrival <= 0
    idle_since = (
        (history.idle_since if history.idle_since is not None else obs.now) if idle else None
    )

    raw, why = _recommend(obs, spec, capacity, (arrival, smoothed or 0.0), ceiling)
    recs = _window(history.recommendations, obs.now, spec.scale_down_stabilization_seconds)
    recs = (*recs, (obs.now, raw))
    new_history = History(started, recs, capacity, idle_since, lag, smoothed)

    def done(replicas: int, direction: Direction, reason: str) -> ScalingDecision:
        throughput = group_throughput(current, obs.partitions, capacity or 0.0)
        drain = lag / throughput if throughput else None
        return ScalingDecision(
            replicas, f"{reason} ({why})", direction, raw, ceiling, new_history, lag, drain
        )

    # Bounds first: they are rules, not recommendations, and need no stabilization.
    if current > ceiling:
        return done(ceiling, Direction.DOWN, f"{current} replicas exceed the ceiling {ceiling}")
    if current < floor:
        return done(max(floor, raw), Direction.UP, f"below minReplicas {spec.min_replicas}")

    if current == 0:
        if lag >= max(spec.activation_lag, 1):
            target = max(raw, 1)
            return done(target, Direction.UP, f"activate: lag {lag} >= {spec.activation_lag}")
        return done(0, Direction.HOLD, f"idle: lag {lag} below activation {spec.activation_lag}")

    target = max(raw, floor)
    if target > current:
        return done(target, Direction.UP, f"scale up {current} -> {target} at once")
    if target == current:
        return done(current, Direction.HOLD, f"steady at {current}")

    # Scale down: only with evidence covering the whole window, and only to its peak.
    window = spec.scale_down_stabilization_seconds
    if obs.now - started < window:
        return done(current, Direction.HOLD, f"hold {current}: history shorter than {window:g}s")
    stabilized = max(max(n for _, n in recs), floor)
    if stabilized >= current:
        return done(
            current, Direction.HOLD, f"hold {current}: needed {stabilized} within {window:g}s"
        )
    if stabilized == 0:
        # Reaching here means every recommendation in the window was 0, i.e. idle all along.
        idle_for = obs.now - idle_since if idle_since is not None else 0.0
        if idle_for < window:
            return done(
                current, Direction.HOLD, f"hold {current}: idle {idle_for:g}s < {window:g}s"
            )
        return done(0, Direction.DOWN, f"scale to zero: idle for {idle_for:g}s")
    return done(stabilized, Direction.DOWN, f"scale down {current} -> {stabilized}")


def _window(
    recs: tuple[tuple[float, int], ...], now: float, seconds: float
) -> tuple[tuple[float, int], ...]:
    """The recommendations made within the last ``seconds``."""
    return tuple((t, n) for t, n in recs if t >= now - seconds)


def _ceiling(obs: Observation, spec: ScalingSpec) -> int:
    """Partitions, lowered by maxReplicas: a consumer beyond the partition count gets nothing."""
    ceiling = obs.partitions
    if spec.max_replicas is not None:
        ceiling = min(ceiling, spec.max_replicas)
    return ceiling


def _learn_capacity(history: History, obs: Observation, spec: ScalingSpec) -> float | None:
    """Update the per-replica capacity from a rate measured while consumers had a backlog."""
    previous, before = history.capacity_per_replica, history.last_lag
    rate, replicas, lag = obs.rate_per_replica, obs.current_replicas, obs.total_lag
    if rate is None or rate <= 0 or replicas == 0:
        return previous
    # Every consumer was busy only if every partition still lags (each consumer owns one at
    # least) and the backlog never ran dry: it grew, or what is left would take another poll to
    # consume. A remainder of noise says nothing about how fast the consumers could have gone.
    growing = before is not None and lag >= before > 0
    saturated = obs.lagging_partitions == obs.partitions and (
        growing or lag >= rate * replicas * spec.poll_seconds
    )
    if previous is None:
        return rate if saturated else None
    if not saturated and rate <= previous:
        return previous  # an idle consumer's rate is the traffic, not its capacity
    # Saturated: the rate is the capacity. Unsaturated but faster than believed: the estimate
    # was low (a rate achieved is a lower bound), so move towards it too.
    return spec.rate_smoothing * rate + (1 - spec.rate_smoothing) * previous


def group_throughput(replicas: int, partitions: int, capacity: float) -> float:
    """Messages/s ``replicas`` consumers sustain when traffic is spread evenly over partitions.

    A partition has one consumer, so the busiest consumer owns ceil(partitions / replicas) of
    them and limits the group: 4 or 5 consumers on 6 partitions sustain no more than 3 do.
    """
    if replicas <= 0 or partitions <= 0:
        return 0.0
    return capacity * partitions / math.ceil(partitions / min(replicas, partitions))


def fewest_replicas_like(replicas: int, partitions: int) -> int:
    """The fewest replicas whose busiest consumer owns as many partitions as with ``replicas``."""
    if replicas <= 0 or partitions <= 0:
        return 0
    return math.ceil(partitions / math.ceil(partitions / min(replicas, partitions)))


def _replicas_for(rate: float, partitions: int, capacity: float, ceiling: int) -> int:
    """The fewest replicas (up to ``ceiling``) sustaining ``rate`` messages/s."""
    for n in range(1, ceiling + 1):
        if group_throughput(n, partitions, capacity) >= rate:
            return n
    return fewest_replicas_like(ceiling, partitions)  # all there is; no consumer that idles


def _smooth_arrivals(
    previous: float | None, measured: float | None, spec: ScalingSpec
) -> float | None:
    """Exponentially smoothed arrival rate; a stop is taken at once (nothing to smooth)."""
    if measured is None:
        return previous
    if previous is None or measured <= 0:
        return measured
    return spec.rate_smoothing * measured + (1 - spec.rate_smoothing) * previous


def _recommend(
    obs: Observation,
    spec: ScalingSpec,
    capacity: float | None,
    arrivals: tuple[float, float],
    ceiling: int,
) -> tuple[int, str]:
    """The raw replica need (before stabilization) and how it was computed.

    ``arrivals`` is (last measured, smoothed) messages/s. Sizing uses the smoothed rate: a real
    rise shows up at once as growing lag (the drain term), a noisy interval does not.
    """
    lag, current, parts = obs.total_lag, obs.current_replicas, obs.partitions
    arrival, smoothed = arrivals
    if lag == 0 and arrival <= 0:
        return 0, "lag 0, no traffic"
    if capacity:
        drain = lag / spec.target_drain_seconds  # messages/s to clear the backlog in time
        wanted = smoothed + drain
        how = (
            f"lag {lag}, in {smoothed:.0f}/s, {capacity:.0f}/s per replica, "
            f"drain in {spec.target_drain_seconds:g}s"
        )
        band = 1 + spec.tolerance
        need = _replicas_for(wanted, parts, capacity, ceiling)
        if 0 < current < need and _replicas_for(wanted / band, parts, capacity, ceiling) <= current:
            need = current  # short of the need by less than the tolerance
            how += ", within tolerance"
        elif need <= current:
            # Going down keeps headroom, so noise just above the new count does not undo it.
            need = min(current, _replicas_for(wanted * band, parts, capacity, ceiling))
        if group_throughput(need, parts, capacity) < wanted / band:
            how += f", capped at {ceiling}"
    else:
        wanted_replicas = math.ceil(lag / spec.lag_per_replica)
        need = min(fewest_replicas_like(wanted_replicas, parts), ceiling)
        how = f"lag {lag} / {spec.lag_per_replica} per replica (rate unknown)"
        if wanted_replicas > ceiling:
            how += f", capped at {ceiling}"
    need = max(need, 1)
    if not spec.cap_at_lagging_partitions:
        return need, how
    if arrival <= 0 and lag > 0 and need > obs.lagging_partitions:
        need = obs.lagging_partitions
        how += f", only {need} partitions lag"
    elif obs.busy_partitions == 1 and need > 1:
        # One hot coupon: that partition has exactly one consumer whatever the count, and the
        # others have nothing to do; a second replica would only cost a rebalance.
        need = 1
        how += ", all lag and arrivals on one partition"
    return need, how
