"""Outcomes and faults to HTTP answers, in one table."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.adapters.redis_client import REDIS_UNAVAILABLE
from app.api.messages import DEFAULT_LANG, Lang, negotiate, text
from app.api.schemas import Failure, FieldError, ValidationFailure
from app.domain.outcomes import GateOutcome

# outcome -> status code; the message is messages.text(outcome.value, lang)
GATE_ANSWERS: dict[GateOutcome, int] = {
    GateOutcome.ACCEPTED: 202,
    GateOutcome.DUPLICATE: 409,
    GateOutcome.SOLD_OUT: 410,
    GateOutcome.EXPIRED: 410,
    GateOutcome.NOT_FOUND: 404,
    GateOutcome.RATE_LIMITED: 429,
}
# Faults of a dependency -> reason: each answers 503 in the failure shape, never a plain 500.
_UNAVAILABLE: tuple[tuple[type[Exception], str], ...] = (
    *((kind, "UNAVAILABLE") for kind in REDIS_UNAVAILABLE),
    # Before OSError, of which it is a subclass: a wait that ran out (a pool, a call's deadline).
    (TimeoutError, "BUSY"),
    (asyncpg.PostgresError, "DATABASE_UNAVAILABLE"),
    (asyncpg.InterfaceError, "DATABASE_UNAVAILABLE"),
    (OSError, "DATABASE_UNAVAILABLE"),
)
DEPENDENCY_FAULTS = tuple(kind for kind, _ in _UNAVAILABLE)


def json_response(body: object, status: int) -> Response:
    """Serialize with orjson straight to bytes (the hot path answers thousands of these a second)."""
    payload = orjson.dumps(body, option=orjson.OPT_UTC_Z)  # "Z" for UTC, as pydantic writes it
    return Response(payload, status_code=status, media_type="application/json")


def failure_payload(reason: str, message: str) -> bytes:
    """The one JSON body of every refusal and fault, whichever layer answers it."""
    return orjson.dumps({"success": False, "message": message, "reason": reason})


def failure(status: int, reason: str, message: str) -> Response:
    return Response(failure_payload(reason, message), status, media_type="application/json")


def refusal(
    status: int, reason: str, lang: Lang = DEFAULT_LANG, key: str | None = None
) -> Response:
    """A failure whose message comes from the message table (``key`` defaults to ``reason``)."""
    return failure(status, reason, text(key or reason, lang))


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
    # Anything else: Starlette's handler of last resort answers it (inside the edge, so with the
    # trace id) and raises it on to the edge, which logs it (api/middleware.py).
    app.add_exception_handler(Exception, _internal_error)


async def _validation_failed(request: Request, exc: Exception) -> Response:
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
    intro = text("VALIDATION", negotiate(request.headers.get("accept-language")))
    body = ValidationFailure(message=f"{intro}: {summary}", errors=errors)
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


def unavailable(exc: BaseException, lang: Lang = DEFAULT_LANG) -> Response:
    """503 for a dependency fault, naming which kind of dependency failed."""
    reason = next((r for kind, r in _UNAVAILABLE if isinstance(exc, kind)), "UNAVAILABLE")
    response = refusal(503, reason, lang)
    response.headers["Retry-After"] = "1"
    return response


async def _dependency_failed(request: Request, exc: Exception) -> Response:
    return unavailable(exc, negotiate(request.headers.get("accept-language")))


async def _internal_error(request: Request, _: Exception) -> Response:
    return refusal(500, "INTERNAL_ERROR", negotiate(request.headers.get("accept-language")))
