"""Outcomes and faults to HTTP answers, in one table."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.schemas import Failure, FieldError, ValidationFailure
from app.domain.outcomes import GateOutcome

# outcome -> (status code, message)
GATE_ANSWERS: dict[GateOutcome, tuple[int, str]] = {
    GateOutcome.ACCEPTED: (202, "Your request is queued; the coupon is issued in order."),
    GateOutcome.DUPLICATE: (409, "You have already requested this coupon."),
    GateOutcome.SOLD_OUT: (410, "This coupon is sold out."),
    GateOutcome.EXPIRED: (410, "This coupon has expired."),
    GateOutcome.NOT_FOUND: (404, "No such coupon."),
    GateOutcome.RATE_LIMITED: (429, "Too many requests; slow down."),
}
UNCONFIRMED_MESSAGE = (
    "Your request was received but the queue has not confirmed it yet; its status shows the"
    " outcome shortly. Do not press again."
)
BROKER_UNAVAILABLE_MESSAGE = "Could not queue the request; nothing was reserved, please retry."

# Faults of a dependency: each answers 503 in the failure shape, never a plain-text 500.
_GATE_DOWN = ("UNAVAILABLE", "The issue gate (Redis) is unavailable; try again shortly.")
_DATABASE_DOWN = ("DATABASE_UNAVAILABLE", "The database is unavailable; try again shortly.")
_UNAVAILABLE: tuple[tuple[type[Exception], tuple[str, str]], ...] = (
    (RedisConnectionError, _GATE_DOWN),
    (RedisTimeoutError, _GATE_DOWN),
    (asyncpg.PostgresError, _DATABASE_DOWN),
    (asyncpg.InterfaceError, _DATABASE_DOWN),
    (OSError, _DATABASE_DOWN),
    (TimeoutError, ("BUSY", "The service is busy; try again shortly.")),
)
DEPENDENCY_FAULTS = tuple(kind for kind, _ in _UNAVAILABLE)


def json_response(body: object, status: int) -> Response:
    """Serialize with orjson straight to bytes (the hot path answers thousands of these a second)."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def failure(status: int, reason: str, message: str) -> Response:
    return json_response({"success": False, "message": message, "reason": reason}, status)


# Answers every write may give before its handler runs (middleware / body parsing).
BODY_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"model": Failure, "description": "The body could not be read as JSON"},
    413: {"model": Failure, "description": "The body is larger than COUPON_MAX_BODY_BYTES"},
    415: {"model": Failure, "description": "The body is not application/json"},
}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for kind in DEPENDENCY_FAULTS:
        app.add_exception_handler(kind, _dependency_failed)
    app.add_exception_handler(Exception, _internal_error)


async def _validation_failed(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "path", "query")]
        message = str(err.get("msg", "invalid"))
        field = ".".join(loc)
        if not field and ":" in message:  # model-level rule: "field: message"
            field, message = (
                s.strip() for s in message.removeprefix("Value error, ").split(":", 1)
            )
        errors.append(FieldError(field=field or "body", message=message))
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors)
    body = ValidationFailure(message=f"Invalid request: {summary}", errors=errors)
    return json_response(body.model_dump(), 422)


async def _http_error(_: Request, exc: Exception) -> Response:
    """Framework-raised HTTP errors (unparseable body, 404 route, 405) in our failure shape."""
    assert isinstance(exc, StarletteHTTPException)
    reason = HTTPStatus(exc.status_code).name if exc.status_code in _KNOWN_STATUSES else "ERROR"
    response = failure(exc.status_code, reason, str(exc.detail))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


_KNOWN_STATUSES = {s.value for s in HTTPStatus}


def unavailable(exc: BaseException) -> Response:
    """503 for a dependency fault, naming which kind of dependency failed."""
    for kind, (reason, message) in _UNAVAILABLE:
        if isinstance(exc, kind):
            response = failure(503, reason, message)
            response.headers["Retry-After"] = "1"
            return response
    return failure(503, "UNAVAILABLE", "A dependency is unavailable; try again shortly.")


async def _dependency_failed(_: Request, exc: Exception) -> Response:
    return unavailable(exc)


async def _internal_error(_: Request, __: Exception) -> Response:
    return failure(500, "INTERNAL_ERROR", "Something went wrong on our side; try again.")
