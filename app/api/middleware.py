"""The HTTP edge, pure ASGI (cheap on the hot path), around every request, the fast path's and
FastAPI's alike (api/app.py builds it): trace id (x-request-id), metrics and the JSON 500, then the
body rules (size, content type)."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import failure_payload, refusal
from app.api.messages import language_of, text
from app.observability import metrics
from app.observability.logs import new_trace_id, trace_id_var

_JSON = b"application/json"
log = logging.getLogger(__name__)


class ObservedRequests:
    """Trace id (``X-Request-Id`` in and out), latency histogram by route, in-flight gauge, and
    the JSON 500 (with that trace id) for an unexpected error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:  # no dict of every header: this is the hot path
            if name == b"x-request-id":
                given = value[:64]
                break
        trace_id = given.decode("latin-1") if given else new_trace_id()
        id_header = (b"x-request-id", given or trace_id.encode("latin-1"))
        token = trace_id_var.set(trace_id)
        status = 500
        started = time.perf_counter()
        answered = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        metrics.API_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Logged here, once; not raised on: the server would log it again. Answered unless
            # an answer had begun (then the server closes the connection).
            log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
            if not answered:
                lang = language_of(scope["headers"])
                await refusal(500, "INTERNAL_ERROR", lang)(scope, receive, send_with_id)
        finally:
            metrics.API_IN_FLIGHT.dec()
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.observe_request(route, scope["method"], status, time.perf_counter() - started)
            trace_id_var.reset(token)


class BodyRules:
    """413 for bodies over the limit, 415 for a non-JSON body on a write."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        content_type, declared, chunked = b"", None, False
        for name, value in scope["headers"]:  # one pass, no dict: this is the hot path
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if content_type != _JSON:
            content_type = content_type.split(b";")[0].strip().lower()
        if (declared not in (None, b"0") or chunked) and content_type != _JSON:
            await _reject(scope, send, 415, "UNSUPPORTED_MEDIA_TYPE")
            return
        if declared is not None and declared.isdigit() and not chunked:
            if int(declared) > self.max_body_bytes:
                await _reject(scope, send, 413, "PAYLOAD_TOO_LARGE")
                return
            # The server delivers no more than the declared length: nothing left to count.
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _reject(scope, send, 413, "PAYLOAD_TOO_LARGE")


class _BodyTooLarge(Exception):
    pass


async def _reject(scope: Scope, send: Send, status: int, reason: str) -> None:
    payload = failure_payload(reason, text(reason, language_of(scope["headers"])))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", _JSON), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})
