"""The issue-request message on Kafka: versioned JSON, strict decoding."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import orjson

MESSAGE_VERSION = 1
# A user id, the one definition: the REST body (api/schemas.py), the fast path and the message.
USER_ID_CHARS = r"[A-Za-z0-9_.@-]"
USER_ID_MAX_LENGTH = 64
USER_ID_PATTERN = re.compile(
    rf"{USER_ID_CHARS}{{1,{USER_ID_MAX_LENGTH}}}"
)  # use fullmatch: "$" allows a trailing \n


class DecodeError(ValueError):
    """The bytes are not a valid issue request; such a message goes to the DLQ at once."""


@dataclass(frozen=True, slots=True)
class IssueRequest:
    """One accepted "get coupon" press, as queued on Kafka."""

    coupon_id: UUID
    user_id: str
    request_id: UUID
    requested_at: datetime

    def key(self) -> bytes:
        """The Kafka key: one coupon's requests stay in one partition, in order."""
        return str(self.coupon_id).encode()


def encode(request: IssueRequest) -> bytes:
    """Serialize a request as version-1 JSON.

    orjson writes the UUIDs and the datetime itself, as ``str()`` and ``isoformat()`` would (every
    press is encoded once: done in C, not by three Python calls)."""
    return orjson.dumps(
        {
            "v": MESSAGE_VERSION,
            "couponId": request.coupon_id,
            "userId": request.user_id,
            "requestId": request.request_id,
            "requestedAt": request.requested_at,
        }
    )


def decode(raw: bytes | None) -> IssueRequest:
    """Parse and validate a message; raise DecodeError for anything that is not a valid v1 request."""
    if raw is None:
        raise DecodeError("empty message")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError("not a JSON object")
    if doc.get("v") != MESSAGE_VERSION:
        raise DecodeError(f"unsupported version {doc.get('v')!r}")
    try:
        coupon_id = UUID(_str_field(doc, "couponId"))
        request_id = UUID(_str_field(doc, "requestId"))
        requested_at = datetime.fromisoformat(_str_field(doc, "requestedAt"))
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    user_id = _str_field(doc, "userId")
    if not USER_ID_PATTERN.fullmatch(user_id):
        raise DecodeError("invalid userId")
    if requested_at.tzinfo is None:
        requested_at = requested_at.replace(tzinfo=UTC)
    return IssueRequest(coupon_id, user_id, request_id, requested_at)


def _str_field(doc: dict[str, object], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str):
        raise DecodeError(f"field {name} missing or not a string")
    return value
