"""Messages follow Accept-Language (English by default, Korean on request) on every path: the ASGI
fast path, FastAPI routes, error handlers and middleware; reason codes never change."""

from __future__ import annotations

import uuid

import httpx

from app.api.messages import Lang, text
from tests.stack import Stack

KO = {"Accept-Language": "ko-KR,ko;q=0.9,en-US;q=0.8"}


def http(stack: Stack) -> httpx.AsyncClient:
    assert stack.http is not None
    return stack.http


async def press(stack: Stack, coupon_id: str, user: str, headers: dict[str, str]) -> httpx.Response:
    return await http(stack).post(
        f"/api/coupons/{coupon_id}/issue/queue", json={"userId": user}, headers=headers
    )


async def test_presses_answer_in_korean_on_request_and_english_otherwise(
    shared_stack: Stack,
) -> None:
    coupon_id = await shared_stack.create_coupon(1)
    accepted = await press(shared_stack, coupon_id, "kim", KO)  # the fast path serves this body
    assert accepted.status_code == 202
    assert accepted.json()["message"] == "쿠폰 발급 요청이 접수되었습니다. 순차적으로 처리됩니다."
    duplicate = await press(shared_stack, coupon_id, "kim", KO)
    assert duplicate.status_code == 409
    assert duplicate.json() == {
        "success": False,
        "reason": "DUPLICATE",
        "message": text("DUPLICATE", Lang.KO),
    }
    sold_out = await press(shared_stack, coupon_id, "lee", {"Accept-Language": "ko"})
    assert (sold_out.status_code, sold_out.json()["reason"]) == (410, "SOLD_OUT")
    assert sold_out.json()["message"] == text("SOLD_OUT", Lang.KO)
    english = await press(shared_stack, coupon_id, "kim", {})
    assert english.json()["message"] == "You have already requested this coupon."
    ranked = await press(shared_stack, coupon_id, "kim", {"Accept-Language": "ko;q=0.2, en"})
    assert ranked.json()["message"] == text("DUPLICATE", Lang.EN)


async def test_route_answers_error_handlers_and_middleware_speak_korean(
    shared_stack: Stack,
) -> None:
    unknown = str(uuid.uuid4())
    r = await http(shared_stack).get(f"/api/coupons/{unknown}", headers=KO)
    assert (r.status_code, r.json()["reason"]) == (404, "NOT_FOUND")
    assert r.json()["message"] == "존재하지 않는 쿠폰입니다."
    r = await http(shared_stack).get(f"/api/coupons/{unknown}/issues/kim", headers=KO)
    assert r.status_code == 404 and r.json()["message"] == text("NOT_FOUND.issue", Lang.KO)
    coupon_id = await shared_stack.create_coupon(1)
    # not a plain press: the FastAPI route validates it and the handler answers
    r = await press(shared_stack, coupon_id, "has space", KO)
    assert r.status_code == 422 and r.json()["reason"] == "VALIDATION"
    assert r.json()["message"].startswith("잘못된 요청입니다: userId")
    assert [e["field"] for e in r.json()["errors"]] == ["userId"]
    r = await http(shared_stack).post(
        f"/api/coupons/{coupon_id}/issue/queue",
        content=b"userId=kim",
        headers={"content-type": "text/plain", **KO},
    )
    assert (r.status_code, r.json()["reason"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert r.json()["message"] == text("UNSUPPORTED_MEDIA_TYPE", Lang.KO)


async def test_openapi_documents_accept_language(shared_stack: Stack) -> None:
    spec = (await http(shared_stack).get("/openapi.json")).json()
    for path, method in [
        ("/api/coupons/{coupon_id}/issue/queue", "post"),
        ("/api/coupons/{coupon_id}", "get"),
        ("/api/coupons", "post"),
    ]:
        names = [p["name"].lower() for p in spec["paths"][path][method].get("parameters", [])]
        assert "accept-language" in names, (path, method)
