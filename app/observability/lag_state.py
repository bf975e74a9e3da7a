"""What the lag exporter knows after each poll, and how it becomes metric families. Pure, no I/O.

The poll loop (exporter.py) feeds readings in; Prometheus scrapes ``ExporterState.collect`` (a
custom collector), so a scrape never waits on the broker and every scrape sees one consistent poll.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import Metric

from app.adapters.kafka_lag import LagSnapshot, PartitionLag
from app.observability import metrics
from app.observability.partition_rates import OffsetWindow, busiest_share


@dataclass(frozen=True, slots=True)
class CouponGauge:
    coupon_id: str
    name: str
    total: int
    issued: int
    remaining: int


class DrainEstimator:
    """Per-partition consume rate from committed-offset progress over a sliding window."""

    def __init__(self, window_s: float) -> None:
        self._positions = OffsetWindow(window_s)

    def observe(self, now: float, partitions: Iterable[PartitionLag]) -> None:
        # The position is the commit, or the log start before the first one.
        self._positions.observe(now, {p.partition: p.position for p in partitions})

    def rate(self, partition: int) -> float:
        """Messages/s committed on ``partition`` over the window (0 without two observations)."""
        return self._positions.rate(partition)

    def drain_seconds(self, partition: PartitionLag) -> float:
        """Lag ÷ recent rate: 0 without lag, +Inf with lag and no progress."""
        if partition.lag <= 0:
            return 0.0
        rate = self.rate(partition.partition)
        return partition.lag / rate if rate > 0 else math.inf


@dataclass
class _SourceHealth:
    ok: int = 0
    errors: int = 0
    last_success: float | None = None
    last_duration: float | None = None


@dataclass(eq=False)  # a collector: registries key on identity
class ExporterState:
    """The latest poll, served to Prometheus by ``collect`` (a custom collector)."""

    rate_window_s: float = 60.0
    lag: LagSnapshot | None = None
    oldest_ages: dict[int, float] = field(default_factory=dict)
    coupons: Sequence[CouponGauge] | None = None
    coupons_truncated: bool = False
    _drain: DrainEstimator | None = None
    _arrivals: OffsetWindow | None = None  # log-end offsets: what was produced, per partition
    _health: dict[str, _SourceHealth] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._drain = DrainEstimator(self.rate_window_s)
        self._arrivals = OffsetWindow(self.rate_window_s)
        for source in ("kafka", "postgres"):
            self._health[source] = _SourceHealth()

    @property
    def drain(self) -> DrainEstimator:
        assert self._drain is not None
        return self._drain

    @property
    def arrivals(self) -> OffsetWindow:
        assert self._arrivals is not None
        return self._arrivals

    def record_lag(
        self, monotonic_now: float, snapshot: LagSnapshot, oldest_ages: dict[int, float]
    ) -> None:
        self.drain.observe(monotonic_now, snapshot.partitions)
        self.arrivals.observe(monotonic_now, {p.partition: p.log_end for p in snapshot.partitions})
        self.lag, self.oldest_ages = snapshot, oldest_ages

    def record_coupons(self, coupons: Sequence[CouponGauge], truncated: bool) -> None:
        self.coupons, self.coupons_truncated = coupons, truncated

    def record_poll(self, source: str, ok: bool, wall_now: float, duration_s: float) -> None:
        """Count a poll; a failed one drops that source's data (absent beats stale)."""
        health = self._health[source]
        health.last_duration = duration_s
        if ok:
            health.ok += 1
            health.last_success = wall_now
            return
        health.errors += 1
        if source == "kafka":
            self.lag, self.oldest_ages = None, {}
        else:
            self.coupons = None

    def kafka_ok_since(self, wall_time: float) -> bool:
        last = self._health["kafka"].last_success
        return last is not None and last >= wall_time

    # --- the custom collector -------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield from self._lag_families()
        yield from self._coupon_families()
        yield from self._health_families()

    def _lag_families(self) -> Iterator[Metric]:
        if self.lag is None:
            return
        reading = self.lag
        lag, seconds, age, committed = (
            metrics.LAG_MESSAGES.family(),
            metrics.LAG_SECONDS.family(),
            metrics.LAG_OLDEST_AGE.family(),
            metrics.COMMITTED_OFFSET.family(),
        )
        log_end = metrics.LOG_END_OFFSET.family()
        # The offsets again, as counters: rate() over them is the arrival / processing rate.
        arrived, processed = metrics.ARRIVED_MESSAGES.family(), metrics.PROCESSED_MESSAGES.family()
        for p in reading.partitions:
            labels = [reading.topic, str(p.partition), reading.group]
            lag.add_metric(labels, p.lag)
            seconds.add_metric(labels, self.drain.drain_seconds(p))
            if p.lag == 0:
                age.add_metric(labels, 0.0)
            elif p.partition in self.oldest_ages:
                age.add_metric(labels, self.oldest_ages[p.partition])
            if p.committed is not None:
                committed.add_metric(labels, p.committed)
                processed.add_metric(labels, p.committed)
            log_end.add_metric([reading.topic, str(p.partition)], p.log_end)
            arrived.add_metric([reading.topic, str(p.partition)], p.log_end)
        partitions = metrics.TOPIC_PARTITIONS.family()
        partitions.add_metric([reading.topic], len(reading.partitions))
        skew = metrics.PARTITION_SKEW.family()
        skew.add_metric(
            [reading.topic],
            busiest_share(self.arrivals.delta(p.partition) for p in reading.partitions),
        )
        yield from (lag, seconds, age, committed, log_end, partitions)
        yield from (arrived, processed, skew)
        if reading.members is not None:  # None: the broker would not say (DescribeGroups)
            members = metrics.GROUP_MEMBERS.family()
            members.add_metric([reading.group], reading.members)
            yield members

    def _coupon_families(self) -> Iterator[Metric]:
        if self.coupons is None:
            return
        issued, remaining, total = (
            metrics.COUPON_ISSUED.family(),
            metrics.COUPON_REMAINING.family(),
            metrics.COUPON_TOTAL.family(),
        )
        for c in self.coupons:
            labels = [c.coupon_id, c.name]
            issued.add_metric(labels, c.issued)
            remaining.add_metric(labels, c.remaining)
            total.add_metric(labels, c.total)
        truncated = metrics.COUPON_LABELS_TRUNCATED.family()
        truncated.add_metric([], 1 if self.coupons_truncated else 0)
        yield from (issued, remaining, total, truncated)

    def _health_families(self) -> Iterator[Metric]:
        polls = metrics.EXPORTER_POLLS.family()
        last = metrics.EXPORTER_LAST_SUCCESS.family()
        duration = metrics.EXPORTER_POLL_DURATION.family()
        for source, health in self._health.items():
            polls.add_metric([source, "ok"], health.ok)
            polls.add_metric([source, "error"], health.errors)
            if health.last_success is not None:
                last.add_metric([source], health.last_success)
            if health.last_duration is not None:
                duration.add_metric([source], health.last_duration)
        yield from (polls, last, duration)
