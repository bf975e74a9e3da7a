"""The sale's two hot requests served before the framework: a press and a status read.

A well-formed press or status read skips FastAPI's and Starlette's middleware stacks, routing,
dependency injection and model validation; this wrapper does for them what those do for every
other request (request id, latency metrics, body rules, JSON failures for faults), in one place.

Only a request that is plainly valid is served here: a JSON press no larger than the body limit
whose body is exactly ``{"userId": "..."}`` matching the contract, for a path whose coupon id is
a UUID; a status read with no query but a bounded ``waitSeconds``. Anything else (bad JSON, extra
fields, a bad user id, another content type) is handed on, body replayed, to the FastAPI app,
which answers with the documented error shapes. Both run the same ``admit_press`` /
``read_status``, so there is one behaviour to test.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from uuid import UUID

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.admission import admit_press
from app.api.errors import DEPENDENCY_FAULTS, refusal, unavailable
from app.api.messages import Lang, negotiate
from app.api.paths import PRESS_ROUTE, STATUS_ROUTE, matcher
from app.api.services import Services
from app.api.status_read import MAX_WAIT_SECONDS, read_status
from app.domain.codec import USER_ID_PATTERN
from app.observability import metrics
from app.observability.logs import new_trace_id, trace_id_var

log = logging.getLogger(__name__)

_PATH = matcher(PRESS_ROUTE)
_STATUS_PATH = matcher(STATUS_ROUTE)
_JSON = b"application/json"

Handler = Callable[[dict[bytes, bytes], Lang], Awaitable[Response]]


class IssueFastPath:
    """Serve plain presses and status reads directly; hand everything else to ``app``."""

    def __init__(
        self, app: ASGIApp, services: Callable[[], Services], max_body_bytes: int = 4096
    ) -> None:
        self.app = app
        self.services = services
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            if method == "POST":
                match = _PATH.match(scope["path"])
                if match is not None and await self._press(scope, receive, send, match):
                    return
            elif method == "GET":
                match = _STATUS_PATH.match(scope["path"])
                if match is not None and await self._status(scope, receive, send, match):
                    return
        await self.app(scope, receive, send)

    async def _press(
        self, scope: Scope, receive: Receive, send: Send, match: re.Match[str]
    ) -> bool:
        """Serve a plain press; False (nothing read) when the body rules need the full app."""
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if (
            declared is None  # chunked: let the app's body rules count it
            or not declared.isdigit()
            or int(declared) > self.max_body_bytes
            or headers.get(b"content-type", b"").split(b";")[0].strip().lower() != _JSON
        ):
            return False
        body = await _read_body(receive)
        if body is None:  # the client went (or was cut off, api/connections.py) mid-body
            return True
        press = _plain_press(match.group(1), body)
        if press is None:
            await self.app(scope, _replay(body, receive), send)
            return True
        coupon_id, user_id = press
        token = headers.get(b"x-user-token")
        client = scope.get("client")

        def admit(_: dict[bytes, bytes], lang: Lang) -> Awaitable[Response]:
            return admit_press(
                self.services(),
                coupon_id,
                user_id,
                token.decode("latin-1") if token else None,
                client[0] if client else "unknown",
                lang,
            )

        await _serve(scope, receive, send, headers, PRESS_ROUTE, admit)
        return True

    async def _status(
        self, scope: Scope, receive: Receive, send: Send, match: re.Match[str]
    ) -> bool:
        """Serve a status read with a valid coupon id and, if any, a valid ``waitSeconds``."""
        wait = _wait_seconds(scope.get("query_string", b""))
        coupon_id = _uuid(match.group(1))
        if wait is None or coupon_id is None:
            return False
        user_id = match.group(2)

        def read(_: dict[bytes, bytes], lang: Lang) -> Awaitable[Response]:
            return read_status(self.services(), coupon_id, user_id, wait, lang)

        await _serve(scope, receive, send, dict(scope["headers"]), STATUS_ROUTE, read)
        return True


async def _serve(
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: dict[bytes, bytes],
    route: str,
    handler: Handler,
) -> None:
    """What the middleware stack does for other requests: trace id (x-request-id) in and out, in-flight and
    latency metrics, 503 for a dependency fault and a JSON 500 for anything unexpected."""
    trace_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or new_trace_id()
    token = trace_id_var.set(trace_id)
    lang = negotiate(headers.get(b"accept-language"))
    started = time.perf_counter()
    status = 500
    metrics.API_IN_FLIGHT.inc()
    try:
        try:
            response = await handler(headers, lang)
        except DEPENDENCY_FAULTS as exc:
            response = unavailable(exc, lang)
        except Exception:
            log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
            response = refusal(500, "INTERNAL_ERROR", lang)
        response.raw_headers.append((b"x-request-id", trace_id.encode("latin-1")))
        status = response.status_code
        await response(scope, receive, send)
    finally:
        metrics.API_IN_FLIGHT.dec()
        metrics.observe_request(route, scope["method"], status, time.perf_counter() - started)
        trace_id_var.reset(token)


def _wait_seconds(query: bytes) -> float | None:
    """0 without a query; the bounded ``waitSeconds``; None for anything else (the app answers)."""
    if not query:
        return 0.0
    name, _, value = query.partition(b"=")
    if name != b"waitSeconds" or b"&" in value:
        return None
    try:
        wait = float(value)
    except ValueError:
        return None
    return wait if 0 <= wait <= MAX_WAIT_SECONDS else None


def _uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body; None if the client disconnected first (a part is never a press)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _plain_press(coupon: str, body: bytes) -> tuple[UUID, str] | None:
    """(coupon id, user id) if the press is exactly what the contract allows, else None."""
    try:
        doc = orjson.loads(body)
        coupon_id = UUID(coupon)
    except ValueError:  # orjson.JSONDecodeError is a ValueError
        return None
    if not isinstance(doc, dict) or doc.keys() != {"userId"}:
        return None
    user_id = doc["userId"]
    if not isinstance(user_id, str) or not USER_ID_PATTERN.fullmatch(user_id):
        return None
    return coupon_id, user_id


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields the already-read body once, then defers to the real one."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
