"""What the API says to people, in every language it speaks: one table, keyed by reason code.

Clients branch on the machine-readable ``reason`` (never translated); ``message`` is for people.
English by default; ``Accept-Language: ko`` (or ``ko-KR``, or ``ko`` ranked above ``en``) answers
in Korean, as the Java service did.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from functools import lru_cache
from typing import Final


class Lang(enum.StrEnum):
    EN = "en"
    KO = "ko"


DEFAULT_LANG: Final = Lang.EN

# message key (the reason code, or the gate outcome's value) -> text per language.
# A reason with two meanings has a qualified key (``NOT_FOUND.issue``) but the same reason code.
MESSAGES: Final[dict[str, dict[Lang, str]]] = {
    "ACCEPTED": {
        Lang.EN: "Your request is queued; the coupon is issued in order.",
        Lang.KO: "쿠폰 발급 요청이 접수되었습니다. 순차적으로 처리됩니다.",
    },
    "DUPLICATE": {
        Lang.EN: "You have already requested this coupon.",
        Lang.KO: "이미 발급 요청한 쿠폰입니다.",
    },
    "SOLD_OUT": {
        Lang.EN: "This coupon is sold out.",
        Lang.KO: "쿠폰이 모두 소진되었습니다.",
    },
    "EXPIRED": {
        Lang.EN: "This coupon has expired.",
        Lang.KO: "만료된 쿠폰입니다.",
    },
    "NOT_FOUND": {
        Lang.EN: "No such coupon.",
        Lang.KO: "존재하지 않는 쿠폰입니다.",
    },
    "NOT_FOUND.issue": {
        Lang.EN: "This user has not requested this coupon.",
        Lang.KO: "이 사용자는 이 쿠폰을 요청한 적이 없습니다.",
    },
    "RATE_LIMITED": {
        Lang.EN: "Too many requests; slow down.",
        Lang.KO: "요청이 너무 많습니다. 잠시 후 다시 시도해 주세요.",
    },
    "UNAUTHORIZED": {
        Lang.EN: "A valid X-User-Token is required.",
        Lang.KO: "유효한 X-User-Token이 필요합니다.",
    },
    "UNAUTHORIZED.admin": {
        Lang.EN: "This operation needs the admin bearer token.",
        Lang.KO: "관리자 토큰(Bearer)이 필요한 작업입니다.",
    },
    "FORBIDDEN": {
        Lang.EN: "The token was issued for another user.",
        Lang.KO: "다른 사용자에게 발급된 토큰입니다.",
    },
    "UNCONFIRMED": {
        Lang.EN: "Your request was received but the queue has not confirmed it yet; its status"
        " shows the outcome shortly. Do not press again.",
        Lang.KO: "요청이 접수되었지만 대기열 확인이 지연되고 있습니다. 발급 상태에서 결과를"
        " 확인해 주세요. 다시 요청하지 마세요.",
    },
    "BROKER_UNAVAILABLE": {
        Lang.EN: "Could not queue the request; nothing was reserved, please retry.",
        Lang.KO: "요청을 대기열에 넣지 못했습니다. 예약된 것이 없으니 다시 시도해 주세요.",
    },
    "UNAVAILABLE": {
        Lang.EN: "The issue gate (Redis) is unavailable; try again shortly.",
        Lang.KO: "발급 게이트(Redis)를 사용할 수 없습니다. 잠시 후 다시 시도해 주세요.",
    },
    "DATABASE_UNAVAILABLE": {
        Lang.EN: "The database is unavailable; try again shortly.",
        Lang.KO: "데이터베이스를 사용할 수 없습니다. 잠시 후 다시 시도해 주세요.",
    },
    "BUSY": {
        Lang.EN: "The service is busy; try again shortly.",
        Lang.KO: "서비스가 혼잡합니다. 잠시 후 다시 시도해 주세요.",
    },
    "REQUEST_TIMEOUT": {
        Lang.EN: "The request did not arrive in time; the connection is closed.",
        Lang.KO: "요청이 제시간에 도착하지 않아 연결을 닫습니다.",
    },
    "INTERNAL_ERROR": {
        Lang.EN: "Something went wrong on our side; try again.",
        Lang.KO: "서버 오류가 발생했습니다. 다시 시도해 주세요.",
    },
    "VALIDATION": {
        Lang.EN: "Invalid request",
        Lang.KO: "잘못된 요청입니다",
    },
    "UNSUPPORTED_MEDIA_TYPE": {
        Lang.EN: "Send the body as application/json.",
        Lang.KO: "요청 본문은 application/json으로 보내 주세요.",
    },
    "PAYLOAD_TOO_LARGE": {
        Lang.EN: "The request body is too large.",
        Lang.KO: "요청 본문이 너무 큽니다.",
    },
}


def text(key: str, lang: Lang = DEFAULT_LANG) -> str:
    """The message for ``key`` in ``lang`` (English when the table has no translation)."""
    entry = MESSAGES[key]
    return entry.get(lang) or entry[DEFAULT_LANG]


def negotiate(accept_language: bytes | str | None) -> Lang:
    """The best supported language for an ``Accept-Language`` header (RFC 9110 q-values).

    ``ko-KR`` matches ``ko`` (its primary subtag); ``q=0`` excludes; ``*`` or nothing supported
    means English. Cached: clients send a handful of distinct headers, and the hot path asks.
    """
    if not accept_language:
        return DEFAULT_LANG
    return _negotiate(accept_language)


def language_of(headers: Iterable[tuple[bytes, bytes]]) -> Lang:
    """The answer's language for a request's raw ASGI headers (its Accept-Language)."""
    for name, value in headers:
        if name == b"accept-language":
            return negotiate(value)
    return DEFAULT_LANG


@lru_cache(maxsize=512)
def _negotiate(header: bytes | str) -> Lang:
    """Keyed by the raw header (bytes on the fast path): a hit costs no decoding."""
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    best, best_q = DEFAULT_LANG, 0.0
    for item in header[:512].split(","):
        tag, _, params = item.partition(";")
        q = _quality(params)
        primary = tag.strip().split("-", 1)[0].lower()
        if primary == "*":
            lang = DEFAULT_LANG
        else:
            try:
                lang = Lang(primary)
            except ValueError:
                continue
        if q > best_q:  # strictly greater: on a tie the earlier range wins
            best, best_q = lang, q
    return best


def _quality(params: str) -> float:
    """The ``q`` of one range's parameters; 1 when absent, 0 when malformed (ignored)."""
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
        # other parameters are not defined for Accept-Language; ignore them
    return 1.0
