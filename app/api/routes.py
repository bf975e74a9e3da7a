"""HTTP routes. The issue path touches Redis and Kafka only (PostgreSQL only on a cold gate)."""

from __future__ import annotations

import hmac
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response

from app.adapters import postgres
from app.adapters.kafka import BrokerUnavailable
from app.api.errors import GATE_ANSWERS, failure, json_response
from app.api.schemas import (
    CouponCreate,
    CouponView,
    Failure,
    IssueAccepted,
    IssueRequestBody,
    IssueStatusView,
)
from app.api.services import Services
from app.domain.codec import IssueRequest
from app.domain.coupon import Coupon
from app.domain.outcomes import GateOutcome, IssueStatus
from app.observability import metrics

router = APIRouter()


def services(request: Request) -> Services:
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
    responses={401: {"model": Failure, "description": "Admin token missing or wrong"}},
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
    },
)
async def queue_issue(coupon_id: UUID, body: IssueRequestBody, svc: Svc) -> Response:
    """Admit or refuse a press at the Redis gate; queue admitted ones on Kafka (acked)."""
    now = datetime.now(UTC)
    answer = await svc.gate.reserve(coupon_id, body.userId, now)
    if not answer.loaded:
        await svc.warm_gate(coupon_id)
        answer = await svc.gate.reserve(coupon_id, body.userId, now)
    outcome = answer.outcome or GateOutcome.NOT_FOUND
    status, message = GATE_ANSWERS[outcome]
    if outcome is not GateOutcome.ACCEPTED:
        metrics.API_ISSUE_REQUESTS.labels(outcome.value.lower()).inc()
        return failure(status, outcome.value, message)
    request = IssueRequest(coupon_id, body.userId, uuid.uuid4(), now)
    started = time.perf_counter()
    try:
        await svc.publisher.publish(request)
    except BrokerUnavailable:
        await svc.gate.release(coupon_id, body.userId)
        metrics.API_ISSUE_REQUESTS.labels("broker_unavailable").inc()
        return failure(503, "BROKER_UNAVAILABLE", "Could not queue the request; please retry.")
    metrics.API_PUBLISH_DURATION.observe(time.perf_counter() - started)
    metrics.API_ISSUE_REQUESTS.labels("accepted").inc()
    return json_response(
        {
            "success": True,
            "message": message,
            "queueSize": answer.queue_ahead,
            "requestId": str(request.request_id),
        },
        202,
    )


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
