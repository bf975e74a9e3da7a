"""One user's status for one coupon, from what PostgreSQL recorded and what the gate holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from app.domain.outcomes import IssueStatus


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    """A row about one request: ISSUED or REJECTED (issue_requests), or FAILED (failed_requests)."""

    request_id: UUID
    status: IssueStatus
    reason: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class UserStatus:
    status: IssueStatus
    reason: str | None = None
    at: datetime | None = None
    request_id: UUID | None = None


def user_status(
    recorded: Sequence[RecordedOutcome], holding_request: UUID | None
) -> UserStatus | None:
    """ISSUED wins; then a reservation with no outcome yet is PENDING; then the latest outcome.

    A user whose earlier request FAILED may press again: the new reservation shows as PENDING.
    None: the user never asked (or everything about it is gone).
    """
    issued = [r for r in recorded if r.status is IssueStatus.ISSUED]
    if issued:
        first = min(issued, key=lambda r: r.at)
        return UserStatus(IssueStatus.ISSUED, None, first.at, first.request_id)
    if holding_request is not None and all(r.request_id != holding_request for r in recorded):
        return UserStatus(IssueStatus.PENDING, request_id=holding_request)
    if not recorded:
        return None
    latest = max(recorded, key=lambda r: r.at)
    return UserStatus(latest.status, latest.reason, latest.at, latest.request_id)
