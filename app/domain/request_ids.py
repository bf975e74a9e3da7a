"""Request ids are UUIDv7: unique, and time-ordered, so a reservation's age is in its id."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import uuid6


def new_request_id() -> UUID:
    """A fresh UUIDv7 (milliseconds since the epoch in its first 48 bits)."""
    return UUID(int=uuid6.uuid7().int)


def created_at(request_id: UUID) -> datetime | None:
    """When a UUIDv7 request id was made; None for ids of other versions (no time in them)."""
    if request_id.version != 7:
        return None
    return datetime.fromtimestamp((request_id.int >> 80) / 1000, UTC)
