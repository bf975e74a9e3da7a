"""Where a user's status is read: Redis first, a bounded long-poll, one answer shape. Shared by
the FastAPI route (documented contract) and the ASGI fast path (a sale's polling)."""

from __future__ import annotations

from uuid import UUID

from starlette.responses import Response

from app.api.errors import json_response, refusal
from app.api.messages import Lang
from app.api.services import Services
from app.domain.outcomes import IssueStatus

MAX_WAIT_SECONDS = 30


async def read_status(
    svc: Services, coupon_id: UUID, user_id: str, wait_s: float, lang: Lang
) -> Response:
    """200 with the user's status (an ``IssueStatusView``; waiting up to ``wait_s`` while
    PENDING), or 404."""
    found = await svc.user_status(coupon_id, user_id, wait_s)
    if found is None:
        return refusal(404, "NOT_FOUND", lang, key="NOT_FOUND.issue")
    issued_at = found.at if found.status is IssueStatus.ISSUED else None
    # the IssueStatusView shape, written directly (a model per poll costs more than the read)
    view: dict[str, object] = {
        "couponId": coupon_id,
        "userId": user_id,
        "status": found.status.value,
        "issuedAt": issued_at.astimezone(svc.settings.zone) if issued_at else None,
        "reason": found.reason,
        "requestId": found.request_id,
    }
    return json_response(view, 200)
