"""The scaling policy's input: consecutive lag reads in, one :class:`Observation` out. Pure, no I/O.

:func:`observe` is the one place that decides what counts as a measured rate (the operator, the
dev-mode scaler and the simulation all call it); :func:`app.autoscaling.policy.decide` reads what it
returns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Observation:
    """What was measured at one poll."""

    now: float  # seconds on any monotonic clock; only differences matter
    lag_per_partition: tuple[int, ...]  # one entry per partition: partition count = len()
    current_replicas: int
    # Messages/s consumed per replica since the previous poll (committed-offset delta / seconds /
    # replicas). None when not measured yet
    # or when the group changed during the interval: a rebalance pause or a starting pod would
    # make the consumers look slower than they are.
    rate_per_replica: float | None = None
    # Messages/s produced to the topic since the previous poll (None: not measured yet).
    arrival_rate: float | None = None
    # Messages produced to each partition since the previous poll (None: not measured yet).
    arrivals_per_partition: tuple[int, ...] | None = None

    @property
    def partitions(self) -> int:
        return len(self.lag_per_partition)

    @property
    def total_lag(self) -> int:
        return sum(self.lag_per_partition)

    @property
    def lagging_partitions(self) -> int:
        return sum(1 for lag in self.lag_per_partition if lag > 0)

    @property
    def busy_partitions(self) -> int | None:
        """Partitions with lag or new messages; None while arrivals per partition are unknown."""
        if self.arrivals_per_partition is None:
            return None
        pairs = zip(self.lag_per_partition, self.arrivals_per_partition, strict=True)
        return sum(1 for lag, arrived in pairs if lag > 0 or arrived > 0)


class GroupFigures(Protocol):
    """What one lag read says about a group (``app.adapters.kafka_lag.LagSnapshot`` has it)."""

    @property
    def lag_per_partition(self) -> tuple[int, ...]: ...

    @property
    def consumed_total(self) -> int:
        """Sum of the group's positions: its delta between two reads is what was consumed."""
        ...

    @property
    def produced_total(self) -> int:
        """Sum of the log ends: its delta between two reads is what was produced."""
        ...

    @property
    def log_end_per_partition(self) -> tuple[int, ...]:
        """Each partition's log end: its delta between two reads is what that partition got."""
        ...

    @property
    def members(self) -> int | None:
        """Consumers in the group; None when the broker would not say."""
        ...


@dataclass(frozen=True, slots=True)
class Reading:
    """One poll's measurement, before acting on it; :func:`observe` returns it for the next poll."""

    now: float  # seconds on any monotonic clock
    group: GroupFigures
    replicas: int  # consumers asked for when the lag was read (before this poll's decision)
    # Set by observe(): since when the replicas, members and partitions have been as now.
    unchanged_since: float | None = None


def observe(reading: Reading, previous: Reading | None) -> tuple[Observation, Reading]:
    """The policy's input at one poll, and the reading to pass as ``previous`` next time.

    The arrival rate needs two reads of the same partitions. The consume rate per replica also
    needs a group that did not change during the interval *or just before it*: a change (a scale,
    a consumer joining or leaving) pauses consumption for a rebalance that may run into the next
    interval, and a paused or starting consumer would look slower than it is. So the replicas asked
    for, the members (where the broker reports them) and the partitions must have been the same
    at this poll and the two before, and every replica a member. Without ``previous`` (the first
    poll, or the first after a failed read) nothing is measured: a rate must not span an outage.
    """
    group, replicas = reading.group, reading.replicas
    rate = arrival = per_partition = None
    since = reading.now
    if previous is not None:
        before, seconds = previous.group, reading.now - previous.now
        same_partitions = len(before.lag_per_partition) == len(group.lag_per_partition)
        same_group = (
            same_partitions and previous.replicas == replicas and before.members == group.members
        )
        if same_group and previous.unchanged_since is not None:
            since = previous.unchanged_since
        if seconds > 0 and same_partitions:
            arrival = max(0, group.produced_total - before.produced_total) / seconds
            ends, before_ends = group.log_end_per_partition, before.log_end_per_partition
            if len(ends) == len(before_ends) == len(group.lag_per_partition):
                per_partition = tuple(max(0, e - b) for e, b in zip(ends, before_ends, strict=True))
        settled = same_group and since < previous.now  # unchanged at the poll before, too
        if seconds > 0 and settled and group.members in (None, replicas):
            consumed = group.consumed_total - before.consumed_total
            rate = per_replica_rate(consumed, seconds, replicas)
    observation = Observation(
        reading.now, group.lag_per_partition, replicas, rate, arrival, per_partition
    )
    return observation, replace(reading, unchanged_since=since)


def per_replica_rate(consumed: int, seconds: float, replicas: int) -> float | None:
    """Messages/s per replica from the committed-offset delta between two polls."""
    if seconds <= 0 or replicas <= 0 or consumed < 0:
        return None
    return consumed / seconds / replicas
