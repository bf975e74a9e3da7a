"""Which reservations are stranded: accepted at the gate, with no outcome, and nowhere in flight.

Pure: the reconciler reads the gate, the topic's lag and PostgreSQL, and asks here. A reservation
is stranded when all of these hold:
- its request has no issue decision in PostgreSQL;
- its coupon's partition has no lag left (every message on it is committed, so its message is
  not queued and not being processed);
- it is older than the publish deadline plus a margin (an API may still be publishing it);
- it was seen so twice, in passes a little apart (a stalled broker that just woke up may still
  append a message it was sent long ago).

What a stranded reservation is told (its ``FailReason``) is no more than the reconciler knows.
Nothing cheap tells a press that never reached the broker from an acknowledged one the broker
lost later, so by default it is told ``NOT_QUEUED``: no outcome, and nothing left queued for it.
Two losses of acknowledged messages can be seen cheaply, by comparing each look at a partition
with the last one (a :class:`PartitionWatch`, kept in PostgreSQL across passes and restarts): the
topic's id changed (the topic was deleted and created again: ``TOPIC_RECREATED``), or the
partition's log end went backwards (the broker lost the tail of its log, say an unflushed tail
after a crash or an unclean leader election: ``LOG_TRUNCATED``). A press accepted before such a
loss was seen may have been lost in it and is told so; a press accepted after it is not. A loss
between two looks that a later append hides (the log end back above where it was) is not seen:
those presses are told ``NOT_QUEUED``, which says no more than is known.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from app.domain.outcomes import FailReason
from app.domain.request_ids import created_at

# Request ids carry the API host's clock, looks the reconciler's: a press this close after a loss
# was seen is still counted as made before it.
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
class PartitionWatch:
    """What the reconciler remembers of one partition between looks."""

    partition: int
    topic_id: UUID | None  # None: the broker would not say
    log_end: int
    seen_at: datetime  # when this look was taken
    lost_at: datetime | None = None  # the latest look that saw acknowledged messages lost
    lost_reason: FailReason | None = None  # TOPIC_RECREATED or LOG_TRUNCATED
    lost_why: str | None = None  # what was seen, for the log


def loss_seen(
    previous: PartitionWatch | None, topic_id: UUID | None, log_end: int
) -> tuple[FailReason, str] | None:
    """Whether this look at a partition shows acknowledged messages lost since the last one.

    A log end never goes backwards while the broker keeps what it acknowledged (retention and
    deletions move the log start, never the end); a topic keeps its id until it is deleted.
    """
    if previous is None:
        return None
    if None not in (topic_id, previous.topic_id) and topic_id != previous.topic_id:
        return FailReason.TOPIC_RECREATED, f"topic id {previous.topic_id} -> {topic_id}"
    if log_end < previous.log_end:
        return FailReason.LOG_TRUNCATED, f"log end {previous.log_end} -> {log_end}"
    return None


def next_watch(
    previous: PartitionWatch | None,
    partition: int,
    topic_id: UUID | None,
    log_end: int,
    seen_at: datetime,
) -> PartitionWatch:
    """The partition's watch after this look; a loss seen once is remembered."""
    lost = loss_seen(previous, topic_id, log_end)
    if lost is not None:
        reason, why = lost
        return PartitionWatch(partition, topic_id, log_end, seen_at, seen_at, reason, why)
    if previous is None:
        return PartitionWatch(partition, topic_id, log_end, seen_at)
    return PartitionWatch(
        partition,
        topic_id or previous.topic_id,
        log_end,
        seen_at,
        previous.lost_at,
        previous.lost_reason,
        previous.lost_why,
    )


def failure_reason(request_id: UUID, watch: PartitionWatch | None) -> FailReason:
    """What a stranded reservation's user is told: a loss of its partition seen after it was
    pressed, else NOT_QUEUED. A request id without a time in it counts as pressed long ago."""
    if watch is None or watch.lost_at is None or watch.lost_reason is None:
        return FailReason.NOT_QUEUED
    made = created_at(request_id)
    if made is None or made < watch.lost_at + CLOCK_MARGIN:
        return watch.lost_reason
    return FailReason.NOT_QUEUED


FAILURE_DETAILS = {
    FailReason.NOT_QUEUED: (
        "accepted at the gate; no outcome and nothing left queued for it; reservation released"
    ),
    FailReason.TOPIC_RECREATED: (
        "accepted at the gate; the request topic was deleted and created again after it, losing"
        " what was queued; reservation released"
    ),
    FailReason.LOG_TRUNCATED: (
        "accepted at the gate; the broker then lost acknowledged messages of its partition (its"
        " log end went backwards); reservation released"
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
