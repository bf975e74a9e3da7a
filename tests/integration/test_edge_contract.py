"""The HTTP edge, one contract: every press and status case answered through the whole app (where
the ASGI fast path takes plain requests) and through the FastAPI app alone gets the same status,
body and headers. In process, on real PostgreSQL, Redis and Kafka; dependency faults are raised
at the services the edge calls, which is where the edge maps them to answers.

Each case runs twice, once per path, on coupons of its own, so both see the same state; the one
field that differs by nature (the ``requestId`` a 202 or a status read carries, made per press)
is compared by shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from redis.exceptions import ConnectionError as RedisConnectionError

from app.adapters.kafka import BrokerUnavailable, PublishUnconfirmed
from app.api.app import CouponApi, create_app
from app.api.services import Services
from app.local.stack import prepare
from harness.coupons import coupon_body
from tests.stack import isolated_settings

TRACE = "contract-trace-1"
FAST, FRAMEWORK = "whole app", "FastAPI alone"


@dataclass
class Edge:
    apps: dict[str, CouponApi]
    clients: dict[str, httpx.AsyncClient]

    @property
    def services(self) -> list[Services]:
        """Each app's services (two apps, one state: the same schema and Redis keys)."""
        return [app.state.services for app in self.apps.values()]

    async def coupon(self, stock: int = 5) -> str:
        answer = await self.clients[FRAMEWORK].post(
            "/api/coupons",
            json=coupon_body(stock, "contract"),
        )
        assert answer.status_code == 201, answer.text
        coupon_id: str = answer.json()["id"]
        return coupon_id


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def edge(kafka_bootstrap: str) -> AsyncIterator[Edge]:
    settings = isolated_settings(kafka_bootstrap, rate_limit_per_user=0, rate_limit_per_ip=0)
    await asyncio.to_thread(prepare, settings)
    apps = {FAST: create_app(settings), FRAMEWORK: create_app(settings, hot_paths=False)}
    async with contextlib.AsyncExitStack() as running:
        clients = {}
        for path, app in apps.items():
            await running.enter_async_context(app.router.lifespan_context(app))
            # raise_app_exceptions off: Starlette raises a 500's exception on after answering it
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            client = httpx.AsyncClient(transport=transport, base_url="http://edge")
            clients[path] = await running.enter_async_context(client)
        yield Edge(apps, clients)


# A case: set up state on a fresh coupon (through the framework), then the request under test.
Setup = Callable[[Edge, str], Awaitable[None]]


async def _nothing(_: Edge, __: str) -> None:
    return None


async def _pressed(edge: Edge, coupon: str) -> None:
    answer = await edge.clients[FRAMEWORK].post(
        f"/api/coupons/{coupon}/issue/queue", json={"userId": "alice"}
    )
    assert answer.status_code == 202, answer.text


async def _sold_out(edge: Edge, coupon: str) -> None:
    for user in ("first-1", "first-2", "first-3", "first-4", "first-5"):
        answer = await edge.clients[FRAMEWORK].post(
            f"/api/coupons/{coupon}/issue/queue", json={"userId": user}
        )
        assert answer.status_code == 202, answer.text


JSON = {"content-type": "application/json"}
PRESS_CASES: list[tuple[str, Setup, dict[str, str], bytes | None, int]] = [
    ("good", _nothing, JSON, b'{"userId": "alice"}', 202),
    ("duplicate", _pressed, JSON, b'{"userId": "alice"}', 409),
    ("sold out", _sold_out, JSON, b'{"userId": "bob"}', 410),
    ("Korean", _pressed, {**JSON, "accept-language": "ko"}, b'{"userId": "alice"}', 409),
    ("extra field", _nothing, JSON, b'{"userId": "alice", "x": 1}', 422),
    ("bad user id", _nothing, JSON, b'{"userId": "a b"}', 422),
    ("user id too long", _nothing, JSON, b'{"userId": "' + b"u" * 65 + b'"}', 422),
    ("user id with a newline", _nothing, JSON, b'{"userId": "alice\\n"}', 422),
    ("not JSON", _nothing, JSON, b"{userId", 422),
    ("no body", _nothing, JSON, None, 422),
    ("not a JSON content type", _nothing, {"content-type": "text/plain"}, b"userId=a", 415),
    ("body over the limit", _nothing, JSON, b'{"userId": "' + b"u" * 20_000 + b'"}', 413),
]


def _normalised(answer: httpx.Response) -> tuple[int, Any, list[tuple[str, str]]]:
    """Status, body and headers, with a per-press ``requestId`` replaced by its shape."""
    try:
        body = answer.json()
    except ValueError:
        body = answer.text
    if isinstance(body, dict) and body.get("requestId") is not None:
        uuid.UUID(body["requestId"])
        body = {**body, "requestId": "<uuid>"}
    headers = sorted((k, v) for k, v in answer.headers.items())
    return answer.status_code, body, headers


Answer = tuple[int, Any, list[tuple[str, str]]]
Ask = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


async def _ask_both(edge: Edge, setup: Setup, ask: Ask, coupon: str | None) -> dict[str, Answer]:
    """``ask`` each path about a coupon of its own (or ``coupon``) after ``setup``; the answers,
    normalised (ids generated per request, each path's coupon id)."""
    answers = {}
    for path, client in edge.clients.items():
        target = coupon or await edge.coupon()
        await setup(edge, target)
        code, body, headers = _normalised(await ask(client, target))
        if isinstance(body, dict) and "couponId" in body:  # each path reads its own coupon
            assert body["couponId"] == target
            body = {**body, "couponId": "<coupon>"}
        answers[path] = (code, body, headers)
    return answers


async def _press_both(
    edge: Edge,
    setup: Setup,
    headers: dict[str, str],
    body: bytes | None,
    coupon: str | None = None,
) -> dict[str, Answer]:
    def press(client: httpx.AsyncClient, target: str) -> Awaitable[httpx.Response]:
        return client.post(
            f"/api/coupons/{target}/issue/queue",
            content=body,
            headers={**headers, "x-request-id": TRACE},
        )

    return await _ask_both(edge, setup, press, coupon)


@pytest.mark.parametrize(
    ("setup", "headers", "body", "status"),
    [case[1:] for case in PRESS_CASES],
    ids=[case[0] for case in PRESS_CASES],
)
async def test_a_press_is_answered_alike_on_both_paths(
    edge: Edge, setup: Setup, headers: dict[str, str], body: bytes | None, status: int
) -> None:
    answers = await _press_both(edge, setup, headers, body)
    assert answers[FAST] == answers[FRAMEWORK]
    code, _, sent_headers = answers[FAST]
    assert code == status
    assert ("x-request-id", TRACE) in sent_headers


@pytest.mark.parametrize(
    "coupon", ["not-a-uuid", "0" * 36, str(uuid.uuid4())], ids=["not a UUID", "36 zeros", "unknown"]
)
async def test_a_press_on_a_bad_or_unknown_coupon_is_answered_alike(
    edge: Edge, coupon: str
) -> None:
    answers = await _press_both(edge, _nothing, JSON, b'{"userId": "alice"}', coupon)
    assert answers[FAST] == answers[FRAMEWORK]
    assert answers[FAST][0] in (404, 422)


# A fault raised where the edge calls the services, and what the contract answers for it.
FAULTS: list[tuple[str, str, BaseException, int, str | None]] = [
    ("Redis away", "gate.reserve", RedisConnectionError("gone"), 503, "UNAVAILABLE"),
    ("broker away", "publisher.publish", BrokerUnavailable("gone"), 503, "BROKER_UNAVAILABLE"),
    ("publish unconfirmed", "publisher.publish", PublishUnconfirmed("late"), 202, None),
    ("timeout", "gate.reserve", TimeoutError(), 503, "BUSY"),
    ("a bug", "gate.reserve", RuntimeError("bug"), 500, "INTERNAL_ERROR"),
]


def _break(edge: Edge, where: str, fault: BaseException, monkeypatch: Any) -> None:
    """Every app's ``where`` (``gate.reserve``, ``user_status``...) raises ``fault``."""

    async def broken(*_: Any, **__: Any) -> Any:
        raise fault

    for svc in edge.services:
        *owners, method = where.split(".")
        owner: Any = svc
        for name in owners:
            owner = getattr(owner, name)
        monkeypatch.setattr(owner, method, broken)


@pytest.mark.parametrize(
    ("where", "fault", "status", "reason"),
    [case[1:] for case in FAULTS],
    ids=[case[0] for case in FAULTS],
)
async def test_a_press_meeting_a_fault_is_answered_alike(
    edge: Edge,
    where: str,
    fault: BaseException,
    status: int,
    reason: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as patch:
        _break(edge, where, fault, patch)  # a coupon is still created: no press in it
        answers = await _press_both(edge, _nothing, JSON, b'{"userId": "alice"}')
    assert answers[FAST] == answers[FRAMEWORK]
    code, body, headers = answers[FAST]
    assert code == status
    assert body.get("reason") == reason if reason else body["status"] == "UNCONFIRMED"
    assert ("x-request-id", TRACE) in headers


STATUS_CASES: list[tuple[str, Setup, str, str, int]] = [
    ("pending", _pressed, "alice", "", 200),
    ("pending, long-poll bounded", _pressed, "alice", "?waitSeconds=0", 200),
    ("never asked", _nothing, "nobody", "", 404),
    ("wait over the bound", _pressed, "alice", "?waitSeconds=99", 422),
    ("negative wait", _pressed, "alice", "?waitSeconds=-1", 422),
    ("wait not a number", _pressed, "alice", "?waitSeconds=soon", 422),
]


async def _status_both(
    edge: Edge, setup: Setup, user: str, query: str, coupon: str | None = None
) -> dict[str, Answer]:
    def read(client: httpx.AsyncClient, target: str) -> Awaitable[httpx.Response]:
        return client.get(
            f"/api/coupons/{target}/issues/{user}{query}", headers={"x-request-id": TRACE}
        )

    return await _ask_both(edge, setup, read, coupon)


@pytest.mark.parametrize(
    ("setup", "user", "query", "status"),
    [case[1:] for case in STATUS_CASES],
    ids=[case[0] for case in STATUS_CASES],
)
async def test_a_status_read_is_answered_alike_on_both_paths(
    edge: Edge, setup: Setup, user: str, query: str, status: int
) -> None:
    answers = await _status_both(edge, setup, user, query)
    assert answers[FAST] == answers[FRAMEWORK]
    assert answers[FAST][0] == status
    assert ("x-request-id", TRACE) in answers[FAST][2]


@pytest.mark.parametrize(
    ("where", "fault", "status", "reason"),
    [
        ("gate.user_view", RedisConnectionError("gone"), 503, "UNAVAILABLE"),
        ("gate.user_view", RuntimeError("bug"), 500, "INTERNAL_ERROR"),
    ],
    ids=["Redis away", "a bug"],
)
async def test_a_status_read_meeting_a_fault_is_answered_alike(
    edge: Edge,
    where: str,
    fault: BaseException,
    status: int,
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    coupon = await edge.coupon()
    await _pressed(edge, coupon)

    with monkeypatch.context() as patch:
        _break(edge, where, fault, patch)
        answers = await _status_both(edge, _nothing, "alice", "", coupon)
    assert answers[FAST] == answers[FRAMEWORK]
    assert answers[FAST][0] == status and answers[FAST][1]["reason"] == reason
    assert ("x-request-id", TRACE) in answers[FAST][2]
