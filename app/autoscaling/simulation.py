"""A second-by-second simulation of a consumer group under our policy and under a KEDA-style rule.

Pure and deterministic (seeded noise), so a test can assert on it and ``python -m
app.autoscaling.simulation`` prints the comparison quoted in the README.

Model, identical for both scalers: messages arrive spread over the partitions (evenly, or by the
scenario's shares: a coupon id is the message key, so one popular coupon is one partition); a replica becomes
useful ``startup_seconds`` after it is requested; whenever the set of running consumers changes the
group rebalances and nobody consumes for ``rebalance_seconds`` (that is what flapping costs); each
running consumer takes up to its per-second capacity from the partitions assigned to it
(round-robin). A scaler polls on its own interval and sees what the real ones see: lag per
partition, the replica count, the group's members and the consumed/produced offset totals. Our
policy turns two polls into an Observation with :func:`app.autoscaling.observation.observe`, as the
operator and dev mode do, so the simulation runs the production rule for measured rates.

The KEDA-style rule is KEDA's Kafka scaler with default settings: poll every 30 s, desired = ceil(totalLag / lagThreshold) capped at the partitions, scale down through the
HPA's default 300 s stabilization window, and to zero only after a 300 s cooldown without lag.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.autoscaling.observation import Reading, observe
from app.autoscaling.policy import History, ScalingDecision, ScalingSpec, decide


@dataclass(frozen=True, slots=True)
class Poll:
    """What a scaler sees at one poll: what the broker and the Deployment would report."""

    now: int
    lag_per_partition: tuple[int, ...]
    replicas: int  # requested (the Deployment's spec.replicas)
    members: int  # consumers in the group: the pods running
    consumed_total: int  # messages committed since the start
    produced_total: int  # messages produced since the start
    log_end_per_partition: tuple[int, ...] = ()  # messages produced to each partition so far


class Scaler(Protocol):
    """Anything that turns a poll into a replica count."""

    @property
    def name(self) -> str: ...

    @property
    def poll_seconds(self) -> int: ...

    def poll(self, p: Poll) -> tuple[int, str]:
        """The replica count to request now, and why."""
        ...


@dataclass
class PolicyScaler:
    """Our policy (:func:`app.autoscaling.policy.decide`) as the operator runs it."""

    spec: ScalingSpec
    name: str = "policy"
    history: History = field(default_factory=History)
    previous: Reading | None = None
    decisions: list[ScalingDecision] = field(default_factory=list)

    @property
    def poll_seconds(self) -> int:
        return int(self.spec.poll_seconds)

    def poll(self, p: Poll) -> tuple[int, str]:
        reading = Reading(float(p.now), p, p.replicas)
        observation, self.previous = observe(reading, self.previous)
        decision = decide(observation, self.spec, self.history)
        self.history = decision.history
        self.decisions.append(decision)
        return decision.replicas, decision.reason


@dataclass
class KedaScaler:
    """The KEDA-style rule: KEDA's Kafka scaler and the HPA, with their default settings."""

    lag_threshold: int = 1000
    activation_lag: int = 0  # KEDA's activationLagThreshold default: active when lag > 0
    poll_seconds: int = 30
    cooldown_seconds: int = 300
    stabilization_seconds: int = 300
    name: str = "keda-style"
    _recs: list[tuple[int, int]] = field(default_factory=list)
    _last_active: int | None = None

    def poll(self, p: Poll) -> tuple[int, str]:
        lag, partitions = sum(p.lag_per_partition), len(p.lag_per_partition)
        if lag > self.activation_lag:
            self._last_active = p.now
        raw = min(math.ceil(lag / self.lag_threshold), partitions)
        self._recs = [(t, n) for t, n in self._recs if t > p.now - self.stabilization_seconds]
        self._recs.append((p.now, raw))
        if p.replicas == 0:
            return (max(raw, 1), "activated") if lag > self.activation_lag else (0, "inactive")
        inactive_for = p.now - (self._last_active if self._last_active is not None else 0)
        if lag <= self.activation_lag and inactive_for >= self.cooldown_seconds:
            return 0, f"inactive for {inactive_for}s"
        if raw >= p.replicas:
            return raw, "hpa up"
        return max(1, min(p.replicas, max(n for _, n in self._recs))), "hpa stabilized"


@dataclass(frozen=True, slots=True)
class Scenario:
    """A traffic pattern and the starting state of the group."""

    name: str
    arrivals: tuple[int, ...]  # messages produced in each second; the length is the duration
    capacity: tuple[int, ...]  # messages one consumer can process in each second
    partitions: int = 6
    initial_replicas: int = 0
    initial_lag: int = 0
    load_rises_at: int | None = None  # when more consumers are first needed (reaction time)
    # Share of the arrivals each partition gets (None: an even, round-robin spread). One coupon
    # sold alone is (1, 0, 0, ...): its id is the key, so all its requests go to one partition.
    shares: tuple[float, ...] | None = None
    startup_seconds: int = 5
    rebalance_seconds: int = 3


@dataclass(frozen=True, slots=True)
class Result:
    """What one scaler did with one scenario."""

    scenario: str
    scaler: str
    reaction_seconds: int | None  # load rise -> first scale-up request
    replica_seconds: int  # what it cost: requested replicas summed over each second
    flaps: int  # scale-downs undone by a scale-up later (capacity given back then needed again)
    changes: int  # scale requests that changed the count
    max_replicas: int
    max_lag: int
    mean_wait_seconds: float  # sum of lag over time / messages (Little's law)
    final_lag: int
    drained_at: int | None  # the second from which no lag is left (None: lag at the end)
    replicas: tuple[int, ...]  # requested replicas in each second
    lags: tuple[int, ...]  # total lag at the end of each second
    events: tuple[tuple[int, int, int, str], ...]  # (t, from, to, reason)


def simulate(scenario: Scenario, scaler: Scaler) -> Result:
    """Run ``scaler`` over ``scenario`` one second at a time."""
    parts = scenario.partitions
    lag = [scenario.initial_lag // parts] * parts
    for i in range(scenario.initial_lag % parts):
        lag[i] += 1
    requested = scenario.initial_replicas
    ready_at = [0] * requested  # one entry per pod: when it starts consuming
    paused_until, running_before = 0, requested
    consumed_total = produced_total = 0
    log_ends = [0] * parts
    replicas: list[int] = []
    lags: list[int] = []
    events: list[tuple[int, int, int, str]] = []

    for t, (arriving, capacity) in enumerate(
        zip(scenario.arrivals, scenario.capacity, strict=True)
    ):
        running = sum(1 for r in ready_at if r <= t)
        if running != running_before:
            paused_until = t + scenario.rebalance_seconds  # the group rebalances
            running_before = running
        for p, n in enumerate(_spread(parts, arriving, t, scenario.shares)):
            lag[p] += n
            log_ends[p] += n
        produced_total += arriving
        if t >= paused_until and running:
            consumed_total += _consume(lag, running, capacity)

        if t % scaler.poll_seconds == 0:
            poll = Poll(
                t, tuple(lag), requested, running, consumed_total, produced_total, tuple(log_ends)
            )
            want, why = scaler.poll(poll)
            if want != requested:
                events.append((t, requested, want, why))
                if want > requested:
                    ready_at += [t + scenario.startup_seconds] * (want - requested)
                else:
                    ready_at = sorted(ready_at)[:want]  # the newest pods go first
                requested = want
        replicas.append(requested)
        lags.append(sum(lag))

    return _result(scenario, scaler.name, replicas, lags, events)


def _spread(parts: int, messages: int, t: int, shares: Sequence[float] | None) -> list[int]:
    """``messages`` over the partitions: by ``shares``, or as a round-robin partitioner would."""
    if shares is not None:
        # Cumulative rounding: whole messages that add up to ``messages`` exactly.
        bounds = [round(messages * sum(shares[:i]) / sum(shares)) for i in range(parts + 1)]
        return [bounds[i + 1] - bounds[i] for i in range(parts)]
    base, extra = divmod(messages, parts)
    return [base + (1 if (i - t) % parts < extra else 0) for i in range(parts)]


def _consume(lag: list[int], consumers: int, capacity: int) -> int:
    """Each consumer shares ``capacity`` fairly over its partitions (p % consumers == index).

    Fair like a fetch that takes from every assigned partition, not one partition at a time.
    """
    done = 0
    for c in range(consumers):
        mine = [p for p in range(c, len(lag), consumers) if lag[p] > 0]
        budget = capacity
        while budget > 0 and mine:
            share = max(1, budget // len(mine))
            for p in list(mine):
                take = min(share, lag[p], budget)
                lag[p] -= take
                budget -= take
                done += take
                if lag[p] == 0:
                    mine.remove(p)
                if budget == 0:
                    break
    return done


def _result(
    scenario: Scenario,
    scaler: str,
    replicas: list[int],
    lags: list[int],
    events: list[tuple[int, int, int, str]],
) -> Result:
    reaction = None
    if scenario.load_rises_at is not None:
        start = scenario.load_rises_at
        before = replicas[start - 1] if start > 0 else scenario.initial_replicas
        reaction = next((t - start for t, _, to, _ in events if t >= start and to > before), None)
    flaps, went_down = 0, False
    for _, before_n, after_n, _ in events:
        if after_n < before_n:
            went_down = True
        elif went_down:
            flaps, went_down = flaps + 1, False
    total = max(1, scenario.initial_lag + sum(scenario.arrivals))
    lagging = [t for t, n in enumerate(lags) if n > 0]
    drained_at = (lagging[-1] + 1 if lagging else 0) if not lags or lags[-1] == 0 else None
    return Result(
        scenario=scenario.name,
        scaler=scaler,
        reaction_seconds=reaction,
        replica_seconds=sum(replicas),
        flaps=flaps,
        changes=len(events),
        max_replicas=max(replicas, default=0),
        max_lag=max(lags, default=0),
        mean_wait_seconds=sum(lags) / total,
        final_lag=lags[-1] if lags else 0,
        drained_at=drained_at,
        replicas=tuple(replicas),
        lags=tuple(lags),
        events=tuple(events),
    )


# --- the standard scenarios ---------------------------------------------------------------------

CAPACITY = 100  # messages/s one consumer processes
DURATION = 900


def _noisy(mean: int, spread: float, seed: int, n: int = DURATION) -> tuple[int, ...]:
    rng = random.Random(seed)
    return tuple(max(0, round(mean * (1 + rng.uniform(-spread, spread)))) for _ in range(n))


def scenarios() -> list[Scenario]:
    """Burst, steady, drain, idle and noisy traffic over 15 minutes, 6 partitions."""
    flat = (CAPACITY,) * DURATION
    burst = tuple(2000 if 97 <= t < 107 else 0 for t in range(DURATION))
    steady = tuple(250 if t >= 13 else 0 for t in range(DURATION))
    return [
        Scenario("burst", burst, flat, load_rises_at=97),
        Scenario("steady", steady, flat, load_rises_at=13),
        Scenario(
            "drain", (50,) * DURATION, flat, initial_replicas=1, initial_lag=30000, load_rises_at=0
        ),
        Scenario("idle", (0,) * DURATION, flat, initial_replicas=2),
        Scenario(
            "noisy",
            tuple(0 if t < 13 else a for t, a in enumerate(_noisy(250, 0.5, seed=7))),
            _noisy(CAPACITY, 0.3, seed=11),
            load_rises_at=13,
        ),
    ]


SALE_START, SALE_SECONDS, SALE_RATE = 13, 120, 250  # 30,000 presses: the stock of the sale


def hot_coupon_scenarios() -> list[Scenario]:
    """One sale (250 presses/s for 2 minutes, 6 partitions) over many, one or three coupon ids."""
    flat = (CAPACITY,) * DURATION
    sale = tuple(
        SALE_RATE if SALE_START <= t < SALE_START + SALE_SECONDS else 0 for t in range(DURATION)
    )

    def spread(name: str, shares: tuple[float, ...] | None) -> Scenario:
        return Scenario(name, sale, flat, load_rises_at=SALE_START, shares=shares)

    return [
        spread("many coupons", None),
        spread("one coupon", (1, 0, 0, 0, 0, 0)),
        spread("one coupon + trickle", (0.8, 0.04, 0.04, 0.04, 0.04, 0.04)),
        spread("3 coupon ids", (1, 0, 1, 0, 1, 0)),  # ids chosen to land on 3 partitions
    ]


def compare(
    spec: ScalingSpec | None = None,
    keda_lag_threshold: int | None = None,
    among: Sequence[Scenario] | None = None,
) -> list[Result]:
    """Each scenario (the standard ones by default) under our policy and the KEDA-style rule."""
    spec = spec or ScalingSpec()
    threshold = keda_lag_threshold or spec.lag_per_replica
    results = []
    for scenario in scenarios() if among is None else among:
        results.append(simulate(scenario, PolicyScaler(spec)))
        results.append(simulate(scenario, KedaScaler(lag_threshold=threshold)))
    return results


def format_table(results: Sequence[Result]) -> str:
    """A plain-text table of the comparison."""
    head = (
        f"{'scenario':<8} {'scaler':<10} {'reaction s':>10} {'replica-s':>9} {'flaps':>5} "
        f"{'changes':>7} {'max rep':>7} {'max lag':>8} {'mean wait s':>11}"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        reaction = "-" if r.reaction_seconds is None else str(r.reaction_seconds)
        rows.append(
            f"{r.scenario:<8} {r.scaler:<10} {reaction:>10} {r.replica_seconds:>9} {r.flaps:>5} "
            f"{r.changes:>7} {r.max_replicas:>7} {r.max_lag:>8} {r.mean_wait_seconds:>11.1f}"
        )
    return "\n".join(rows)


def format_hot_table(results: Sequence[Result]) -> str:
    """The hot-coupon comparison: what replicas buy when the traffic sits on a few partitions."""
    head = (
        f"{'scenario':<20} {'scaler':<10} {'max rep':>7} {'replica-s':>9} {'max lag':>8} "
        f"{'drained s':>9} {'mean wait s':>11}"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        drained = "-" if r.drained_at is None else str(max(0, r.drained_at - SALE_START))
        rows.append(
            f"{r.scenario:<20} {r.scaler:<10} {r.max_replicas:>7} {r.replica_seconds:>9} "
            f"{r.max_lag:>8} {drained:>9} {r.mean_wait_seconds:>11.1f}"
        )
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - the printable report
    spec = ScalingSpec()
    print(
        f"{DURATION} s per scenario, 6 partitions, {CAPACITY} msg/s per consumer; policy: "
        f"poll {spec.poll_seconds:g}s, window {spec.scale_down_stabilization_seconds:g}s, "
        f"drain {spec.target_drain_seconds:g}s; keda-style: poll 30s, cooldown 300s, "
        f"lagThreshold {spec.lag_per_replica}\n"
    )
    print(format_table(compare(spec)))
    print(
        f"\nA single hot coupon: {SALE_RATE} presses/s for {SALE_SECONDS} s from t={SALE_START} s;"
        " drained s = from the sale's start until no lag is left\n"
    )
    print(format_hot_table(compare(spec, among=hot_coupon_scenarios())))
