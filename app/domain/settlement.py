"""Which reservations are stranded: accepted at the gate, with no outcome, and nowhere in flight.

Pure: the reconciler reads the gate, the topic's lag and PostgreSQL, and asks here. A reservation
is stranded when all of these hold:
- its request has no issue decision in PostgreSQL;
- its coupon's partition has no lag left (every message on it is committed, so its message is
  not queued and not being processed);
- it is older than the publish deadline plus a margin (an API may still be publishing it);
- it was seen so twice, in passes a little apart (a stalled broker that just woke up may still
  append a message it was sent long ago).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from app.domain.request_ids import created_at


@dataclass(frozen=True, slots=True)
class Reservation:
    coupon_id: UUID
    user_id: str
    request_id: UUID


def stranded_suspects(
    coupon_id: UUID,
    holders: Mapping[str, str],
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
            request_id = UUID(held)
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
