"""The hot path without the framework: a well-formed issue press skips FastAPI's routing,
dependency injection and model validation (about half of an API worker's CPU per press).

Only a press that is plainly valid is served here: a `{"userId": "..."}` body matching the
contract, for a path whose coupon id is a UUID. Anything else (bad JSON, extra fields, a bad user
id) is handed on, body replayed, to the FastAPI route, which answers with the documented error
shapes. Both paths run the same `admit_press`, so there is one behaviour to test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.admission import admit_press
from app.api.errors import DEPENDENCY_FAULTS, unavailable
from app.api.messages import negotiate
from app.api.services import Services
from app.api.status_read import MAX_WAIT_SECONDS, read_status
from app.domain.codec import USER_ID_PATTERN

_PATH = re.compile(r"^/api/coupons/([0-9a-fA-F-]{36})/issue/queue$")
_STATUS_PATH = re.compile(r"^/api/coupons/([0-9a-fA-F-]{36})/issues/([^/]+)$")


@dataclass(frozen=True, slots=True)
class _Route:
    """What the metrics middleware reads from ``scope["route"]`` (the route template)."""

    path: str = "/api/coupons/{coupon_id}/issue/queue"


_ROUTE = _Route()
_STATUS_ROUTE = _Route("/api/coupons/{coupon_id}/issues/{user_id}")


class IssueFastPath:
    """Serve plain issue presses directly; hand everything else to the app unchanged."""

    def __init__(self, app: ASGIApp, services: Callable[[], Services]) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET":
            await self._status(scope, receive, send)
            return
        match = _PATH.match(scope["path"])
        if match is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        press = _plain_press(match.group(1), body)
        if press is None:
            await self.app(scope, _replay(body, receive), send)
            return
        coupon_id, user_id = press
        headers = dict(scope["headers"])
        token = headers.get(b"x-user-token")
        client = scope.get("client")
        lang = negotiate(headers.get(b"accept-language"))
        scope["route"] = _ROUTE
        try:
            response = await admit_press(
                self.services(),
                coupon_id,
                user_id,
                token.decode("latin-1") if token else None,
                client[0] if client else "unknown",
                lang,
            )
        except DEPENDENCY_FAULTS as exc:
            response = unavailable(exc, lang)
        await response(scope, receive, send)

    async def _status(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A status read with a valid coupon id and, if any, a valid ``waitSeconds``."""
        match = _STATUS_PATH.match(scope["path"])
        wait = _wait_seconds(scope.get("query_string", b"")) if match else None
        coupon_id = _uuid(match.group(1)) if match else None
        if match is None or wait is None or coupon_id is None:
            await self.app(scope, receive, send)
            return
        lang = negotiate(dict(scope["headers"]).get(b"accept-language"))
        scope["route"] = _STATUS_ROUTE
        try:
            response = await read_status(self.services(), coupon_id, match.group(2), wait, lang)
        except DEPENDENCY_FAULTS as exc:
            response = unavailable(exc, lang)
        await response(scope, receive, send)


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


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
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
