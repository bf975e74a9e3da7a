"""The sale's two hot requests served before FastAPI's routing: a press and a status read.

A leaf of the HTTP edge (api/middleware.py): the trace id, the latency metric, the body rules and the
JSON 500 are the edge's, around it and around FastAPI alike. This only matches, parses, calls
``admit_press`` / ``read_status`` and maps a dependency fault through the one table
(api/errors.py).

Only a request that is plainly valid is served here: a press whose body is exactly
``{"userId": "..."}`` matching the contract, for a path whose coupon id is a UUID; a status read
with no query but a bounded ``waitSeconds``. Anything else (bad JSON, extra fields, a bad user
id) is handed on, body replayed, to FastAPI, which answers with the documented error shapes.
Both run the same ``admit_press`` / ``read_status``, and tests/integration/test_edge_contract.py
sends every case through both.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.admission import admit_press
from app.api.errors import DEPENDENCY_FAULTS, unavailable
from app.api.messages import Lang, negotiate
from app.api.paths import PRESS_ROUTE, STATUS_ROUTE, matcher
from app.api.services import Services
from app.api.status_read import MAX_WAIT_SECONDS, read_status
from app.domain.codec import USER_ID_PATTERN

_PATH = matcher(PRESS_ROUTE)
_STATUS_PATH = matcher(STATUS_ROUTE)

Handler = Callable[[Lang], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class HotRoute:
    """Put in ``scope["route"]`` as Starlette's router does, for the edge's latency metric."""

    path: str


_PRESS, _STATUS = HotRoute(PRESS_ROUTE), HotRoute(STATUS_ROUTE)


class IssueFastPath:
    """Serve plain presses and status reads directly; hand everything else to ``app``."""

    def __init__(self, app: ASGIApp, services: Callable[[], Services]) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            if method == "POST":
                match = _PATH.match(scope["path"])
                if match is not None:
                    await self._press(scope, receive, send, match)
                    return
            elif method == "GET":
                match = _STATUS_PATH.match(scope["path"])
                if match is not None and await self._status(scope, receive, send, match):
                    return
        await self.app(scope, receive, send)

    async def _press(
        self, scope: Scope, receive: Receive, send: Send, match: re.Match[str]
    ) -> None:
        """Serve a plain press (the edge's body rules stand before this: JSON, within the limit)."""
        headers = dict(scope["headers"])
        body = await _read_body(receive)
        if body is None:  # the client went (or was cut off, api/connections.py) mid-body
            return
        press = _plain_press(match.group(1), body)
        if press is None:
            await self.app(scope, _replay(body, receive), send)
            return
        coupon_id, user_id = press
        token = headers.get(b"x-user-token")
        client = scope.get("client")

        def admit(lang: Lang) -> Awaitable[Response]:
            return admit_press(
                self.services(),
                coupon_id,
                user_id,
                token.decode("latin-1") if token else None,
                client[0] if client else "unknown",
                lang,
            )

        await _serve(scope, receive, send, headers, _PRESS, admit)

    async def _status(
        self, scope: Scope, receive: Receive, send: Send, match: re.Match[str]
    ) -> bool:
        """Serve a status read with a valid coupon id and, if any, a valid ``waitSeconds``."""
        wait = _wait_seconds(scope.get("query_string", b""))
        coupon_id = _uuid(match.group(1))
        if wait is None or coupon_id is None:
            return False
        user_id = match.group(2)

        def read(lang: Lang) -> Awaitable[Response]:
            return read_status(self.services(), coupon_id, user_id, wait, lang)

        await _serve(scope, receive, send, dict(scope["headers"]), _STATUS, read)
        return True


async def _serve(
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: dict[bytes, bytes],
    route: HotRoute,
    handler: Handler,
) -> None:
    """Answer with ``handler``, a dependency fault as the one table says; anything unexpected
    is the edge's to answer (a JSON 500)."""
    scope["route"] = route
    lang = negotiate(headers.get(b"accept-language"))
    try:
        response = await handler(lang)
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
