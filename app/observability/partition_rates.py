"""Per-partition progress over a sliding window, and how unevenly traffic spreads. Pure, no I/O.

A coupon id is the message key, so every press on one coupon lands on one partition and is issued
by the one consumer that owns it. The lag exporter feeds the log-end offsets (what arrived) and the
group's positions (what was processed) of each poll into an :class:`OffsetWindow`; the busiest
partition's share of the arrivals (:func:`busiest_share`) says whether a single hot coupon, not
the number of consumers, limits the sale.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping


class OffsetWindow:
    """Progress of one monotonic offset per partition over the last ``window_s`` seconds."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._history: dict[int, deque[tuple[float, int]]] = {}

    def observe(self, now: float, offsets: Mapping[int, int]) -> None:
        """Record each partition's offset at ``now`` (seconds on a monotonic clock)."""
        for partition, offset in offsets.items():
            history = self._history.setdefault(partition, deque())
            if history and offset < history[-1][1]:
                history.clear()  # offsets were reset (or the topic recreated): start over
            history.append((now, offset))
            # Keep one point at or before the window's start so the rate spans the whole window.
            while len(history) > 2 and history[1][0] <= now - self._window_s:
                history.popleft()

    def delta(self, partition: int) -> int:
        """Offsets gained on ``partition`` over the window (0 without two observations)."""
        history = self._history.get(partition)
        if not history or len(history) < 2:
            return 0
        return history[-1][1] - history[0][1]

    def rate(self, partition: int) -> float:
        """Offsets per second on ``partition`` over the window (0 without two observations)."""
        history = self._history.get(partition)
        if not history or len(history) < 2:
            return 0.0
        (t0, o0), (t1, o1) = history[0], history[-1]
        return (o1 - o0) / (t1 - t0) if t1 > t0 else 0.0


def busiest_share(arrivals: Iterable[int]) -> float:
    """Share of the arrivals that went to the busiest partition: the partition skew.

    1/partitions is an even spread, 1.0 means one partition (one hot key) took everything. 0.0
    when nothing arrived: no partition is hot, and a ratio of nothing would be undefined.
    """
    counts = [max(0, n) for n in arrivals]
    total = sum(counts)
    return max(counts) / total if total > 0 else 0.0
