"""HTTP routes. The issue path touches Redis and Kafka only (PostgreSQL only on a cold gate)."""

from __future__ import annotations

import hmac
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from app.adapters import postgres
from app.adapters.dead_letters import list_dead_letters, replay_dead_letters
from app.api.admission import admit_press
from app.api.errors import BODY_ANSWERS, json_response, refusal
from app.api.messages import Lang, negotiate
from app.api.paths import PRESS_ROUTE, STATUS_ROUTE
from app.api.schemas import (
    CouponCreate,
    CouponView,
    Failure,
    IssueAccepted,
    IssueRequestBody,
    IssueStatusView,
)
from app.api.services import Services
from app.api.status_read import MAX_WAIT_SECONDS, read_status
from app.domain.coupon import Coupon

router = APIRouter()


async def services(request: Request) -> Services:
    """Async on purpose: FastAPI runs a sync dependency in a worker thread (a thread hop and GIL
    hand-off on every request of the hot path)."""
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]


async def language(
    accept_language: Annotated[
        str | None, Header(description="`ko` answers messages in Korean; default English")
    ] = None,
) -> Lang:
    return negotiate(accept_language)


Language = Annotated[Lang, Depends(language)]


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
    response_model=CouponView,
    dependencies=[Depends(require_admin)],
    responses={
        401: {"model": Failure, "description": "Admin token missing or wrong"},
        **BODY_ANSWERS,
    },
)
async def create_coupon(body: CouponCreate, svc: Svc, _: Language) -> Response:
    now = datetime.now(UTC)
    expires_at = body.expires_at(svc.settings.zone)
    if expires_at <= now:
        raise RequestValidationError(
            [{"loc": ("body", "expiresAt"), "msg": "must be in the future", "type": "value_error"}]
        )
    coupon_id = uuid.uuid4()
    coupon = Coupon(
        id=coupon_id,
        name=body.name,
        discount_type=body.discountType,
        discount_value=body.discountValue,
        total_quantity=body.totalQuantity,
        min_order_amount=body.minOrderAmount,
        expires_at=expires_at,
        created_at=now,
        partition=await svc.publisher.partition_for_coupon(str(coupon_id).encode()),
    )
    # Registered before it exists: a coupon in PostgreSQL is never unknown to the gate.
    await svc.gate.register([coupon.id])
    async with svc.db() as conn:
        await postgres.insert_coupon(conn, coupon)
    await svc.gate.load(
        coupon.id, coupon.total_quantity, coupon.expires_at, holders=(), partition=coupon.partition
    )
    return _coupon_answer(coupon, svc, 201)


@router.get(
    "/api/coupons/{coupon_id}",
    response_model=CouponView,
    responses={404: {"model": Failure, "description": "Unknown coupon"}},
)
async def get_coupon(coupon_id: UUID, svc: Svc, lang: Language) -> Any:
    async with svc.db() as conn:
        coupon = await postgres.get_coupon(conn, coupon_id)
    if coupon is None:
        return refusal(404, "NOT_FOUND", lang)
    return _coupon_answer(coupon, svc, 200)


def _coupon_answer(coupon: Coupon, svc: Svc, status: int) -> Response:
    """Every coupon answer renders the same way: money with its 2 decimals, zoned timestamps."""
    return json_response(CouponView.of(coupon, svc.settings.zone).model_dump(), status)


@router.post(
    PRESS_ROUTE,
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
    lang: Language,
    x_user_token: Annotated[str | None, Header()] = None,
) -> Response:
    """Admit or refuse a press at the Redis gate; queue admitted ones on Kafka (acked).

    The same press also takes the ASGI fast path (api/fast_path.py) when its body is plain; this
    route answers the rest (validation errors) and documents the contract.
    """
    client_ip = request.client.host if request.client else "unknown"
    return await admit_press(svc, coupon_id, body.userId, x_user_token, client_ip, lang)


@router.get(
    STATUS_ROUTE,
    response_model=IssueStatusView,
    responses={404: {"model": Failure, "description": "The user never asked for this coupon"}},
)
async def issue_status(
    coupon_id: UUID,
    user_id: str,
    svc: Svc,
    lang: Language,
    waitSeconds: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Long-poll: while PENDING, wait up to this long for the outcome",
        ),
    ] = 0,
) -> Any:
    """PENDING until the request has an outcome; ISSUED, REJECTED (with a reason) and FAILED
    (with a reason; the reservation was given back and the user may press again) are final.
    Answered from Redis: a sale's polling never reaches PostgreSQL. Plain reads also take the
    ASGI fast path (api/fast_path.py); both run ``read_status``."""
    return await read_status(svc, coupon_id, user_id, waitSeconds, lang)


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
