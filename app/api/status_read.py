"""Where a user's status is read: Redis first, a bounded long-poll, one answer shape. Shared by
the FastAPI route (documented contract) and the ASGI fast path (a sale's polling)."""

from __future__ import annotations

import asyncio
from uuid import UUID

from starlette.responses import Response

from app.adapters import postgres
from app.api.errors import json_response, refusal
from app.api.messages import Lang
from app.api.services import Services
from app.domain.outcomes import IssueStatus
from app.domain.status import UserStatus, user_status
from app.observability import metrics
from app.waits import until_set

MAX_WAIT_SECONDS = 30
_REPOLL_S = 2.0  # a long-poll re-reads Redis this often even without an announcement


async def read_status(
    svc: Services, coupon_id: UUID, user_id: str, wait_s: float, lang: Lang
) -> Response:
    """200 with the user's status (an ``IssueStatusView``; waiting up to ``wait_s`` while
    PENDING), or 404."""
    found = await wait_for_status(svc, coupon_id, user_id, wait_s)
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


async def wait_for_status(
    svc: Services, coupon_id: UUID, user_id: str, wait_s: float
) -> UserStatus | None:
    """The user's status from Redis; while PENDING, wait up to ``wait_s`` for an outcome.

    PostgreSQL is read only when Redis lost the coupon's gate (rebuilt once, outcomes
    included). None: no such coupon, or the user never asked.
    """
    if wait_s <= 0:  # a plain poll: no waiter to register
        return await _status_now(svc, coupon_id, user_id)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait_s
    with svc.feed.waiter(coupon_id, user_id) as announced:
        while True:
            announced.clear()
            found = await _status_now(svc, coupon_id, user_id)
            remaining = give_up - loop.time()
            if found is None or found.status is not IssueStatus.PENDING or remaining <= 0:
                return found
            with metrics.API_LONG_POLLS_WAITING.track_inprogress():
                await until_set(announced, min(remaining, _REPOLL_S))


async def _status_now(svc: Services, coupon_id: UUID, user_id: str) -> UserStatus | None:
    loaded, holder, outcome = await svc.gate.user_view(coupon_id, user_id)
    if not loaded:
        if not await svc.loader.open_gate(coupon_id):
            return None
        loaded, holder, outcome = await svc.gate.user_view(coupon_id, user_id)
    if loaded:
        return user_status([outcome] if outcome else [], holder)
    metrics.GATE_DB_READS.labels("status").inc()
    async with svc.db() as conn:  # evicted again at once: ask the truth
        recorded = await postgres.recorded_outcomes(conn, coupon_id, user_id)
    return user_status(recorded, holder)
