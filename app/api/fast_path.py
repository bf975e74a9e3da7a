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
from app.domain.codec import USER_ID_PATTERN

_PATH = re.compile(r"^/api/coupons/([0-9a-fA-F-]{36})/issue/queue$")


@dataclass(frozen=True, slots=True)
class _Route:
    """What the metrics middleware reads from ``scope["route"]`` (the route template)."""

    path: str = "/api/coupons/{coupon_id}/issue/queue"


_ROUTE = _Route()


class IssueFastPath:
    """Serve plain issue presses directly; hand everything else to the app unchanged."""

    def __init__(self, app: ASGIApp, services: Callable[[], Services]) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATH.match(scope["path"]) if scope["type"] == "http" else None
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
