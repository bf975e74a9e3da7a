"""HTTP routes. The issue path touches Redis and Kafka only (PostgreSQL only on a cold gate)."""

from __future__ import annotations

import hmac
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import jwt
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response

from app.adapters import postgres
from app.adapters.kafka import BrokerUnavailable
from app.adapters.rate_limit import Limit
from app.api.errors import BODY_ANSWERS, GATE_ANSWERS, failure, json_response
from app.api.schemas import (
    CouponCreate,
    CouponView,
    Failure,
    IssueAccepted,
    IssueRequestBody,
    IssueStatusView,
)
from app.api.services import Services
from app.consumer.dlq import list_dead_letters, replay_dead_letters
from app.domain.codec import IssueRequest
from app.domain.coupon import Coupon
from app.domain.outcomes import GateOutcome, IssueStatus
from app.observability import metrics

router = APIRouter()


async def services(request: Request) -> Services:
    """Async on purpose: FastAPI runs a sync dependency in a worker thread (a thread hop and GIL
    hand-off on every request of the hot path)."""
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]


async def require_admin(svc: Svc, authorization: Annotated[str | None, Header()] = None) -> None:
    """Admin writes need ``Authorization: Bearer <COUPON_ADMIN_TOKEN>`` when a token is set."""
    expected = svc.settings.admin_token
    if expected is None:
        return
    given = (authorization or "").removeprefix("Bearer ").encode()
    if not hmac.compare_digest(given, expected.get_secret_value().encode()):
        raise AdminAuthRequired


class AdminAuthRequired(Exception):
    """Raised by ``require_admin``; answered with 401."""


@router.post(
    "/api/coupons",
    status_code=201,
    dependencies=[Depends(require_admin)],
    responses={
        401: {"model": Failure, "description": "Admin token missing or wrong"},
        **BODY_ANSWERS,
    },
)
async def create_coupon(body: CouponCreate, svc: Svc) -> CouponView:
    coupon = Coupon(
        id=uuid.uuid4(),
        name=body.name,
        discount_type=body.discountType,
        discount_value=body.discountValue,
        total_quantity=body.totalQuantity,
        min_order_amount=body.minOrderAmount,
        expires_at=body.expiresAt,
        created_at=datetime.now(UTC),
    )
    async with svc.pool.acquire() as conn:
        await postgres.insert_coupon(conn, coupon)
    await svc.gate.load(coupon.id, coupon.total_quantity, coupon.expires_at, holders=())
    return CouponView.of(coupon)


@router.get(
    "/api/coupons/{coupon_id}",
    response_model=CouponView,
    responses={404: {"model": Failure, "description": "Unknown coupon"}},
)
async def get_coupon(coupon_id: UUID, svc: Svc) -> Any:
    async with svc.pool.acquire() as conn:
        coupon = await postgres.get_coupon(conn, coupon_id)
    if coupon is None:
        return failure(404, "NOT_FOUND", "No such coupon.")
    return CouponView.of(coupon)


@router.post(
    "/api/coupons/{coupon_id}/issue/queue",
    status_code=202,
    response_model=IssueAccepted,
    responses={
        404: {"model": Failure, "description": "Unknown coupon"},
        409: {"model": Failure, "description": "Duplicate request"},
        410: {"model": Failure, "description": "Sold out or expired"},
        503: {"model": Failure, "description": "Broker or gate unavailable"},
        401: {"model": Failure, "description": "Signed-user mode: X-User-Token missing or invalid"},
        403: {"model": Failure, "description": "Signed-user mode: token issued for another user"},
        429: {"model": Failure, "description": "Rate limit exceeded (see Retry-After)"},
        **BODY_ANSWERS,
    },
)
async def queue_issue(
    coupon_id: UUID,
    body: IssueRequestBody,
    svc: Svc,
    request: Request,
    x_user_token: Annotated[str | None, Header()] = None,
) -> Response:
    """Admit or refuse a press at the Redis gate; queue admitted ones on Kafka (acked)."""
    refused = await _refuse_unvouched_or_too_fast(svc, request, body.userId, x_user_token)
    if refused is not None:
        return refused
    now = datetime.now(UTC)
    queued = IssueRequest(coupon_id, body.userId, uuid.uuid4(), now)
    answer = await svc.gate.reserve(coupon_id, body.userId, queued.request_id, now)
    if not answer.loaded:
        await svc.warm_gate(coupon_id)
        answer = await svc.gate.reserve(coupon_id, body.userId, queued.request_id, now)
    outcome = answer.outcome or GateOutcome.NOT_FOUND
    status, message = GATE_ANSWERS[outcome]
    if outcome is not GateOutcome.ACCEPTED:
        metrics.API_ISSUE_REQUESTS.labels(outcome.value.lower()).inc()
        return failure(status, outcome.value, message)
    started = time.perf_counter()
    try:
        await svc.publisher.publish(queued)
    except BrokerUnavailable:
        await svc.gate.release(coupon_id, body.userId, queued.request_id)
        metrics.API_ISSUE_REQUESTS.labels("broker_unavailable").inc()
        return failure(503, "BROKER_UNAVAILABLE", "Could not queue the request; please retry.")
    metrics.API_PUBLISH_DURATION.observe(time.perf_counter() - started)
    metrics.API_ISSUE_REQUESTS.labels("accepted").inc()
    return json_response(
        {
            "success": True,
            "message": message,
            "queueSize": answer.queue_ahead,
            "requestId": str(queued.request_id),
        },
        202,
    )


async def _refuse_unvouched_or_too_fast(
    svc: Services, request: Request, user_id: str, token: str | None
) -> Response | None:
    """Signed-user mode (a gateway vouches for the user) and per-user / per-IP rate limits."""
    secret = svc.settings.user_jwt_secret
    if secret is not None:
        subject = verified_subject(token, secret.get_secret_value())
        if subject is None:
            metrics.API_ISSUE_REQUESTS.labels("unauthorized").inc()
            return failure(401, "UNAUTHORIZED", "A valid X-User-Token is required.")
        if subject != user_id:
            metrics.API_ISSUE_REQUESTS.labels("unauthorized").inc()
            return failure(403, "FORBIDDEN", "The token was issued for another user.")
    client_ip = request.client.host if request.client else "unknown"
    wait = await svc.limiter.exceeded(
        Limit(f"user:{user_id}", svc.settings.rate_limit_per_user),
        Limit(f"ip:{client_ip}", svc.settings.rate_limit_per_ip),
    )
    if wait is None:
        return None
    metrics.API_ISSUE_REQUESTS.labels("rate_limited").inc()
    response = failure(429, "RATE_LIMITED", "Too many requests; slow down.")
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


@router.get(
    "/api/coupons/{coupon_id}/issues/{user_id}",
    response_model=IssueStatusView,
    responses={404: {"model": Failure, "description": "The user never asked for this coupon"}},
)
async def issue_status(coupon_id: UUID, user_id: str, svc: Svc) -> Any:
    async with svc.pool.acquire() as conn:
        outcome = await postgres.user_outcome(conn, coupon_id, user_id)
    if outcome is not None:
        status, reason, processed_at = outcome
        return IssueStatusView(
            couponId=coupon_id,
            userId=user_id,
            status=status.value,
            issuedAt=processed_at if status is IssueStatus.ISSUED else None,
            reason=reason,
        )
    if await svc.gate.has_reserved(coupon_id, user_id):
        return IssueStatusView(couponId=coupon_id, userId=user_id, status="PENDING")
    return failure(404, "NOT_FOUND", "This user has not requested this coupon.")


@router.get(
    "/api/admin/dead-letters",
    dependencies=[Depends(require_admin)],
    responses={401: {"model": Failure, "description": "Admin token missing or wrong"}},
)
async def dead_letters(svc: Svc) -> list[dict[str, Any]]:
    """Every dead letter on the DLQ topic, newest last."""
    entries = await list_dead_letters(svc.settings.kafka_bootstrap, svc.settings.dlq_topic)
    return [
        {
            "partition": e.partition,
            "offset": e.offset,
            "error": e.letter.error,
            "attempts": e.letter.attempts,
            "source": {
                "topic": e.letter.topic,
                "partition": e.letter.partition,
                "offset": e.letter.offset,
            },
            "failedAt": e.letter.failed_at.isoformat(),
        }
        for e in entries
    ]


@router.post(
    "/api/admin/dead-letters/replay",
    dependencies=[Depends(require_admin)],
    responses={
        401: {"model": Failure, "description": "Admin token missing or wrong"},
        **BODY_ANSWERS,
    },
)
async def replay(svc: Svc) -> dict[str, int]:
    """Send dead letters not replayed before back to the request topic."""
    settings = svc.settings
    replayed = await replay_dead_letters(
        settings.kafka_bootstrap, settings.dlq_topic, settings.consumer_group
    )
    return {"replayed": replayed}
