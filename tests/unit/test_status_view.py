"""The status read writes the IssueStatusView shape by hand (no model per poll): it must stay
exactly what the documented model would have written."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import pytest

from app.api import status_read
from app.api.messages import Lang
from app.api.schemas import IssueStatusView
from app.api.status_read import read_status
from app.config import Settings
from app.domain.outcomes import IssueStatus
from app.domain.status import UserStatus

COUPON = UUID("0193a6f0-0000-7000-8000-000000000001")
REQUEST = uuid4()
CASES = [
    UserStatus(IssueStatus.PENDING, request_id=REQUEST),
    UserStatus(IssueStatus.ISSUED, None, datetime(2026, 11, 25, 1, 2, 3, 456789, UTC), REQUEST),
    UserStatus(IssueStatus.ISSUED, None, datetime(2026, 11, 25, 1, 2, 3, tzinfo=UTC), REQUEST),
    UserStatus(IssueStatus.REJECTED, "SOLD_OUT", datetime(2026, 11, 25, tzinfo=UTC), REQUEST),
    UserStatus(IssueStatus.FAILED, "DEAD_LETTERED", None, None),
]


@pytest.mark.parametrize("zone", ["Asia/Seoul", "UTC"])
@pytest.mark.parametrize("found", CASES, ids=lambda s: f"{s.status.value}-{s.reason}")
async def test_the_status_body_is_what_the_model_writes(
    found: UserStatus, zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(default_timezone=zone)

    async def user_status(*_: Any) -> UserStatus:
        return found

    monkeypatch.setattr(status_read, "wait_for_status", user_status)
    svc: Any = SimpleNamespace(settings=settings)
    response = await read_status(svc, COUPON, "alice", 0, Lang.EN)

    issued = found.status is IssueStatus.ISSUED and found.at is not None
    expected = IssueStatusView(
        couponId=COUPON,
        userId="alice",
        status=found.status.value,
        issuedAt=found.at.astimezone(settings.zone) if issued and found.at else None,
        reason=found.reason,
        requestId=found.request_id,
    )
    assert response.status_code == 200
    assert response.body == expected.model_dump_json().encode()
