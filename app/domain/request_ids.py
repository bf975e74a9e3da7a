"""Request ids are UUIDv7: unique, and time-ordered, so a reservation's age is in its id.

Written here rather than taken from a library: the ``uuid6`` package keeps its ids monotonic by
moving the timestamp one millisecond forward for every id made within the same millisecond, so
at a sale's thousands of presses per second its ids ran seconds ahead of the clock, and a
reservation's age (what the reconciler and ``verify`` read) was wrong. Here the timestamp is the
clock's and uniqueness comes from 74 random bits (RFC 9562, without the optional counter).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from uuid import UUID

_VERSION_7 = 0x7 << 76  # bits 76-79
_VARIANT_RFC = 0x2 << 62  # bits 62-63: 0b10
_RANDOM = ~(0xF << 76) & ~(0x3 << 62) & ((1 << 80) - 1)  # the 74 bits left for randomness


def new_request_id() -> UUID:
    """A fresh UUIDv7: milliseconds since the epoch in its first 48 bits, then random bits.

    (The version and variant bits are set by hand: Python 3.11's UUID takes versions 1-5 only.)
    """
    ms = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10)) & _RANDOM
    return UUID(int=(ms & 0xFFFF_FFFF_FFFF) << 80 | _VERSION_7 | _VARIANT_RFC | random)


def created_at(request_id: UUID) -> datetime | None:
    """When a UUIDv7 request id was made; None for ids of other versions (no time in them)."""
    if request_id.version != 7:
        return None
    return datetime.fromtimestamp((request_id.int >> 80) / 1000, UTC)
