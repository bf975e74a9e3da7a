"""The ASGI fast path takes only plainly valid presses and hands the rest on, body intact."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from app.api.fast_path import IssueFastPath, _plain_press

COUPON = str(uuid.uuid4())


def press_scope(content_length: int) -> dict[str, Any]:
    """An ASGI scope of a JSON press on COUPON declaring ``content_length`` body bytes."""
    return {
        "type": "http",
        "method": "POST",
        "path": f"/api/coupons/{COUPON}/issue/queue",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(content_length).encode()),
        ],
    }


@pytest.mark.parametrize(
    ("body", "plain"),
    [
        (b'{"userId": "alice"}', True),
        (b'{"userId": "a.b-c_d@e"}', True),
        (b'{"userId": "alice\\n"}', False),  # "$" in a regex would let this through
        (b'{"userId": ""}', False),
        (b'{"userId": "' + b"x" * 65 + b'"}', False),
        (b'{"userId": "alice", "extra": 1}', False),
        (b'{"userId": 7}', False),
        (b'["alice"]', False),
        (b"not json", False),
        (b"", False),
    ],
)
def test_only_plain_presses_take_the_fast_path(body: bytes, plain: bool) -> None:
    assert (_plain_press(COUPON, body) is not None) is plain


def test_a_bad_coupon_id_is_not_plain() -> None:
    assert _plain_press("0" * 36, b'{"userId": "alice"}') is None


async def test_anything_else_reaches_the_app_with_its_body() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["body"] = (await receive())["body"]

    def no_services() -> Any:
        raise AssertionError("a non-plain press must not be served by the fast path")

    chunks = iter([b'{"userId": ', b'"bad user"}'])

    async def receive() -> dict[str, Any]:
        chunk = next(chunks)
        return {"type": "http.request", "body": chunk, "more_body": chunk.endswith(b" ")}

    scope = press_scope(content_length=22)
    await IssueFastPath(app, no_services)(scope, receive, None)  # type: ignore[arg-type]
    assert seen["body"] == b'{"userId": "bad user"}'


async def test_a_body_cut_off_by_a_disconnect_is_never_a_press() -> None:
    """The first bytes of a declared 40-byte body are a plain press; the client goes before the
    rest (or api/connections.py cuts it off): nothing is admitted, nothing answered."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise AssertionError("a cut-off press must not reach the app")

    def no_services() -> Any:
        raise AssertionError("a cut-off press must not be admitted")

    messages: Iterator[dict[str, Any]] = iter(
        [
            {"type": "http.request", "body": b'{"userId": "alice"}', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    scope = press_scope(content_length=40)
    await IssueFastPath(app, no_services)(scope, receive, None)  # type: ignore[arg-type]
