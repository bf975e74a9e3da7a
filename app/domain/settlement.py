"""Which reservations are stranded: accepted at the gate, with no outcome, and nowhere in flight.

Pure: the reconciler reads the gate, the topic's lag and PostgreSQL, and asks here. A reservation
is stranded when all of these hold:
- its request has no issue decision in PostgreSQL;
- its coupon's partition has no lag left (every message on it is committed, so its message is
  not queued and not being processed);
- it is older than the publish deadline plus a margin (an API may still be publishing it);
- it was seen so twice, in passes a little apart (a stalled broker that just woke up may still
  append a message it was sent long ago).

What a stranded reservation is told (its ``FailReason``) is no more than the reconciler knows. It
remembers each partition between passes (a :class:`PartitionWatch`, kept in PostgreSQL): the
topic's id, the log start and end, the group's position, since when it has watched, and when it
last saw the broker lose queued messages there. A press made while it watched, with no loss seen
since, never reached the queue (``NOT_QUEUED``: had the broker acknowledged it, it would still be
in the log, so consumed and decided). A press made before a loss was seen may have been lost with
it (``QUEUE_LOST``). A press made before the watch began: nothing more is known than that it has
no outcome and nothing is left queued for it (``NO_OUTCOME``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from app.domain.outcomes import FailReason
from app.domain.request_ids import created_at

# A gap between two looks longer than this breaks the watch: offsets that far apart tell little
# (retention may have moved the log start past a position legitimately), so the watch starts over.
WATCH_GAP = timedelta(hours=1)
# Request ids carry the API host's clock, looks the reconciler's: a press this close to a look is
# counted on the side that says less.
CLOCK_MARGIN = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Reservation:
    coupon_id: UUID
    user_id: str
    request_id: UUID


@dataclass(frozen=True, slots=True)
class Settled:
    """A stranded reservation given back, and the reason its user is told."""

    coupon_id: UUID
    user_id: str
    request_id: UUID
    reason: FailReason


@dataclass(frozen=True, slots=True)
class FailedRequest:
    """The failure to record for one settled reservation (a failed_requests row)."""

    request_id: UUID
    coupon_id: UUID
    user_id: str
    reason: FailReason
    detail: str
    failed_at: datetime


@dataclass(frozen=True, slots=True)
class PartitionLook:
    """One read of a partition: its log start and end, and the group's commit there."""

    partition: int
    log_start: int
    log_end: int
    committed: int | None  # None: the group never committed on this partition

    @property
    def position(self) -> int:
        """Where the group resumes: its commit, or the log start (nothing older exists)."""
        return self.log_start if self.committed is None else max(self.committed, self.log_start)


@dataclass(frozen=True, slots=True)
class PartitionWatch:
    """What the reconciler remembers of one partition between passes."""

    partition: int
    topic_id: UUID | None  # None: the broker would not say
    log_start: int
    log_end: int
    position: int
    seen_at: datetime  # when this look was complete
    watched_since: datetime  # the first look of an unbroken series
    lost_at: datetime | None = None  # the last look that saw queued messages lost
    lost_why: str | None = None


def loss_seen(
    previous: PartitionWatch | None, topic_id: UUID | None, look: PartitionLook, now: datetime
) -> str | None:
    """Why this look shows the broker lost messages not yet consumed since the last one, or None.

    Cheap signs only, from offsets and the topic's id: the topic re-created (its id changed), the
    log end gone backwards, or the log start moved past where the group was (records deleted or
    expired unconsumed). Without a recent look to compare with, what this look alone shows: a
    commit below the log start, or above the log end.
    """
    if previous is not None:
        if topic_id is not None and previous.topic_id not in (None, topic_id):
            return f"topic re-created (id {previous.topic_id} -> {topic_id})"
        if now - previous.seen_at <= WATCH_GAP:
            if look.log_end < previous.log_end:
                return f"log end went backwards ({previous.log_end} -> {look.log_end})"
            if look.log_start > previous.position:
                return (
                    f"records deleted before they were consumed (log start {look.log_start},"
                    f" group at {previous.position} at the last look)"
                )
            return None
    if look.committed is not None and look.committed < look.log_start:
        return (
            f"records deleted before they were consumed (log start {look.log_start},"
            f" commit {look.committed})"
        )
    if look.committed is not None and look.committed > look.log_end:
        return (
            f"log truncated below what was consumed (commit {look.committed}, end {look.log_end})"
        )
    return None


def next_watch(
    previous: PartitionWatch | None, topic_id: UUID | None, look: PartitionLook, now: datetime
) -> PartitionWatch:
    """The partition's watch after this look (``now``: when the look was complete)."""
    lost = loss_seen(previous, topic_id, look, now)
    unbroken = previous is not None and now - previous.seen_at <= WATCH_GAP
    lost_at = previous.lost_at if previous else None
    lost_why = previous.lost_why if previous else None
    return PartitionWatch(
        partition=look.partition,
        topic_id=topic_id,
        log_start=look.log_start,
        log_end=look.log_end,
        position=look.position,
        seen_at=now,
        watched_since=previous.watched_since if previous and unbroken else now,
        lost_at=now if lost else lost_at,
        lost_why=lost or lost_why,
    )


def failure_reason(request_id: UUID, watch: PartitionWatch | None) -> FailReason:
    """What a stranded reservation's user is told: no more than its partition's watch shows.

    A request id without a time in it (not UUIDv7) is counted as made before anything was seen.
    """
    made = created_at(request_id)
    if watch is None:
        return FailReason.NO_OUTCOME
    if watch.lost_at is not None and (made is None or made < watch.lost_at + CLOCK_MARGIN):
        return FailReason.QUEUE_LOST
    if made is None or made < watch.watched_since + CLOCK_MARGIN:
        return FailReason.NO_OUTCOME
    return FailReason.NOT_QUEUED


FAILURE_DETAILS = {
    FailReason.NOT_QUEUED: "accepted at the gate, never reached the queue; reservation released",
    FailReason.QUEUE_LOST: (
        "accepted at the gate; the broker then lost queued messages of its partition, and it may"
        " have been one of them; reservation released"
    ),
    FailReason.NO_OUTCOME: (
        "accepted at the gate; no outcome and nothing left queued for it (whether it reached the"
        " queue is not known); reservation released"
    ),
}


def stranded_suspects(
    coupon_id: UUID,
    holders: Mapping[str, str | UUID],
    undecided: set[UUID],
    partition_lag: int | None,
    now: datetime,
    min_age: timedelta,
) -> list[Reservation]:
    """The coupon's reservations that look stranded in this one observation.

    ``partition_lag`` None (the broker could not be read) means nothing can be told: none.
    A request id without a time in it (not UUIDv7, from before request ids were) counts as old.
    """
    if partition_lag is None or partition_lag > 0:
        return []
    found = []
    for user, held in holders.items():
        try:
            request_id = held if isinstance(held, UUID) else UUID(held)
        except ValueError:
            continue
        if request_id not in undecided:
            continue
        made = created_at(request_id)
        if made is not None and now - made < min_age:
            continue
        found.append(Reservation(coupon_id, user, request_id))
    return found


def confirmed(previous: Iterable[Reservation], current: Iterable[Reservation]) -> list[Reservation]:
    """Suspects seen in both of two passes: those are stranded."""
    earlier = set(previous)
    return [r for r in current if r in earlier]
