"""Admin token, gateway-signed users, rate limits, and logs that never carry secrets."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt
import orjson

from harness.coupons import coupon_body
from tests.stack import Stack, isolated_settings, stack_fixture

ADMIN = "admin-token-7f3a9c"
JWT_SECRET = "gateway-secret-b41d2e-0123456789abcdef"


secured = stack_fixture(
    "secured",
    "Admin token, signed users, a per-user rate limit and JSON logs; no consumer.",
    scope="module",
    consumers=0,
    admin_token=ADMIN,
    user_jwt_secret=JWT_SECRET,
    rate_limit_per_user=3,
    log_format="json",
    log_level="DEBUG",
)


def token_for(user: str, secret: str = JWT_SECRET, ttl: float = 60) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time() + ttl)}, secret, algorithm="HS256")


async def press(
    stack: Stack, coupon_id: str, user: str, token: str | None
) -> tuple[int, dict[str, str], dict[str, object]]:
    assert stack.http is not None
    headers = {"X-User-Token": token} if token else {}
    r = await stack.http.post(
        f"/api/coupons/{coupon_id}/issue/queue", json={"userId": user}, headers=headers
    )
    return r.status_code, dict(r.headers), r.json()


async def test_admin_writes_need_the_bearer_token(secured: Stack) -> None:
    assert secured.http is not None
    body = coupon_body(3, "vip")
    r = await secured.http.post("/api/coupons", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = await secured.http.post(
        "/api/coupons", json=body, headers={"Authorization": "Bearer wrong"}
    )
    assert r.status_code == 401
    assert (await secured.http.get("/api/admin/dead-letters")).status_code == 401
    assert (await secured.http.post("/api/admin/dead-letters/replay", json={})).status_code == 401
    r = await secured.http.get("/api/admin/dead-letters", headers=secured.admin_headers())
    assert r.status_code == 200 and r.json() == []
    assert await secured.create_coupon(3)  # with the token


async def test_signed_user_mode_requires_a_token_for_that_user(secured: Stack) -> None:
    coupon_id = await secured.create_coupon(10)
    assert (await press(secured, coupon_id, "alice", None))[0] == 401
    assert (
        await press(
            secured,
            coupon_id,
            "alice",
            token_for("alice", secret="forged-secret-of-the-same-length-000"),
        )
    )[0] == 401
    assert (await press(secured, coupon_id, "alice", token_for("alice", ttl=-10)))[0] == 401
    status, _, body = await press(secured, coupon_id, "alice", token_for("mallory"))
    assert status == 403 and body["reason"] == "FORBIDDEN"
    assert (await press(secured, coupon_id, "alice", token_for("alice")))[0] == 202


async def test_per_user_rate_limit_answers_429_with_retry_after(secured: Stack) -> None:
    coupon_id = await secured.create_coupon(10)
    token = token_for("eager")
    answers = await asyncio.gather(*(press(secured, coupon_id, "eager", token) for _ in range(10)))
    statuses = [a[0] for a in answers]
    # 10 presses inside at most two one-second windows: at most 2 x 3 pass the limiter.
    assert statuses.count(429) >= 4, statuses
    assert statuses.count(202) == 1 and set(statuses) <= {202, 409, 429}
    for status, headers, body in answers:
        if status == 429:
            assert headers["retry-after"] == "1" and body["reason"] == "RATE_LIMITED"


async def test_ip_rate_limit(kafka_bootstrap: str, tmp_path: Path) -> None:
    stack = await Stack(isolated_settings(kafka_bootstrap, rate_limit_per_ip=20), tmp_path).start(
        consumers=0
    )
    try:
        coupon_id = await stack.create_coupon(1000)
        answers = await asyncio.gather(
            *(stack.request_issue(coupon_id, f"crowd-{i}") for i in range(60))
        )
        statuses = [a.status_code for a in answers]
        assert statuses.count(429) >= 20, statuses  # at most 2 windows x 20 pass
        assert set(statuses) <= {202, 429}
    finally:
        await stack.stop()


async def test_logs_are_json_lines_without_secrets(secured: Stack) -> None:
    await test_signed_user_mode_requires_a_token_for_that_user(secured)
    text = (secured.log_dir / "api.log").read_text()
    assert ADMIN not in text and JWT_SECRET not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the API logged nothing at DEBUG"
    for line in lines:
        record = orjson.loads(line)
        assert {"ts", "level", "logger", "msg"} <= record.keys()
