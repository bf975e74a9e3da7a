"""Where a press is admitted, end to end at the API: vouch, limit, gate, publish. Shared by the FastAPI
route (documented contract, error shapes) and the ASGI fast path (the hot path)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from uuid import UUID

import jwt
from starlette.responses import Response

from app.adapters.kafka import BrokerUnavailable, PublishUnconfirmed
from app.api.errors import GATE_ANSWERS, json_response, refusal
from app.api.messages import DEFAULT_LANG, Lang, text
from app.api.services import Services
from app.domain.codec import IssueRequest
from app.domain.outcomes import GateOutcome
from app.domain.request_ids import new_request_id
from app.observability import metrics

RETRY_AFTER_SECONDS = "1"  # rate-limit windows are one second


async def admit_press(
    svc: Services,
    coupon_id: UUID,
    user_id: str,
    token: str | None,
    client_ip: str,
    lang: Lang = DEFAULT_LANG,
) -> Response:
    """Admit or refuse one press at the Redis gate; queue an admitted one on Kafka (acked)."""
    refused = await _refuse_unvouched(svc, user_id, token, lang) or await _refuse_busy_ip(
        svc, client_ip, lang
    )
    if refused is not None:
        return refused
    now = datetime.now(UTC)
    queued = IssueRequest(coupon_id, user_id, new_request_id(), now)
    limit = svc.settings.rate_limit_per_user
    answer = await svc.gate.reserve(coupon_id, user_id, queued.request_id, now, limit)
    if not answer.loaded and await svc.loader.open_gate(coupon_id):
        answer = await svc.gate.reserve(coupon_id, user_id, queued.request_id, now, limit)
    outcome = answer.outcome or GateOutcome.NOT_FOUND
    status = GATE_ANSWERS[outcome]
    if outcome is not GateOutcome.ACCEPTED:
        metrics.count_issue_request(outcome.value.lower())
        response = refusal(status, outcome.value, lang)
        if outcome is GateOutcome.RATE_LIMITED:
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response
    started = time.perf_counter()
    try:
        await svc.publisher.publish(queued, answer.partition)
    except BrokerUnavailable:
        # It never left this process: undoing the reservation is safe, and so is a retry.
        await svc.gate.release(coupon_id, user_id, queued.request_id)
        metrics.count_issue_request("broker_unavailable")
        return refusal(503, "BROKER_UNAVAILABLE", lang)
    except PublishUnconfirmed:
        # It may still be appended (a stalled broker): keep the reservation and claim nothing.
        # The consumer issues it if it lands; the reconciler settles it if it never does.
        metrics.count_issue_request("unconfirmed")
        return _accepted(text("UNCONFIRMED", lang), answer.queue_ahead, queued, "UNCONFIRMED")
    metrics.API_PUBLISH_DURATION.observe(time.perf_counter() - started)
    metrics.count_issue_request("accepted")
    return _accepted(text(outcome.value, lang), answer.queue_ahead, queued, "QUEUED")


def _accepted(message: str, ahead: int, queued: IssueRequest, status: str) -> Response:
    return json_response(
        {
            "success": True,
            "message": message,
            "queueSize": ahead,
            "requestId": queued.request_id,  # orjson writes a UUID as str() would
            "status": status,
        },
        202,
    )


async def _refuse_unvouched(
    svc: Services, user_id: str, token: str | None, lang: Lang
) -> Response | None:
    """Signed-user mode: a gateway vouches for the user with an HS256 JWT (off by default)."""
    secret = svc.settings.user_jwt_secret
    if secret is None:
        return None
    subject = verified_subject(token, secret.get_secret_value())
    if subject is None:
        metrics.count_issue_request("unauthorized")
        return refusal(401, "UNAUTHORIZED", lang)
    if subject != user_id:
        metrics.count_issue_request("unauthorized")
        return refusal(403, "FORBIDDEN", lang)
    return None


async def _refuse_busy_ip(svc: Services, client_ip: str, lang: Lang) -> Response | None:
    """Per-IP limit (off by default: behind a gateway every user shares its address)."""
    wait = await svc.limiter.exceeded(f"ip:{client_ip}", svc.settings.rate_limit_per_ip)
    if wait is None:
        return None
    metrics.count_issue_request("rate_limited")
    response = refusal(429, "RATE_LIMITED", lang)
    response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


def verified_subject(token: str | None, secret: str) -> str | None:
    """The ``sub`` of a valid, unexpired HS256 token, else None."""
    if not token:
        return None
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError:
        return None
    subject = claims.get("sub")
    return subject if isinstance(subject, str) else None
