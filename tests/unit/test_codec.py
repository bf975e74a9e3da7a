from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.codec import DecodeError, IssueRequest, decode, encode
from app.domain.dead_letter import DeadLetter, decode_dead_letter, encode_dead_letter

user_ids = st.from_regex(r"\A[A-Za-z0-9_.@-]{1,64}\Z")


@given(user_id=user_ids, ts=st.datetimes(timezones=st.just(UTC)))
def test_round_trip(user_id: str, ts: datetime) -> None:
    request = IssueRequest(uuid.uuid4(), user_id, uuid.uuid4(), ts)
    assert decode(encode(request)) == request


@given(st.binary(max_size=300))
def test_any_bytes_either_parse_or_raise_decode_error(raw: bytes) -> None:
    try:
        decode(raw)
    except DecodeError:
        pass


@pytest.mark.parametrize(
    "doc",
    [
        {
            "v": 2,
            "couponId": str(uuid.uuid4()),
            "userId": "u",
            "requestId": str(uuid.uuid4()),
            "requestedAt": "2026-01-01T00:00:00+00:00",
        },
        {
            "v": 1,
            "couponId": "nope",
            "userId": "u",
            "requestId": str(uuid.uuid4()),
            "requestedAt": "2026-01-01T00:00:00+00:00",
        },
        {
            "v": 1,
            "couponId": str(uuid.uuid4()),
            "userId": "bad user!",
            "requestId": str(uuid.uuid4()),
            "requestedAt": "2026-01-01T00:00:00+00:00",
        },
        {"v": 1, "couponId": str(uuid.uuid4()), "userId": "u", "requestId": str(uuid.uuid4())},
        [1, 2, 3],
    ],
    ids=["future-version", "bad-uuid", "bad-user", "missing-field", "not-object"],
)
def test_invalid_messages_are_rejected(doc: object) -> None:
    with pytest.raises(DecodeError):
        decode(orjson.dumps(doc))


def test_missing_value_is_rejected() -> None:
    with pytest.raises(DecodeError):
        decode(None)


@given(
    value=st.one_of(st.none(), st.binary(max_size=100)),
    key=st.one_of(st.none(), st.binary(max_size=40)),
)
def test_dead_letter_round_trip_keeps_original_bytes(
    value: bytes | None, key: bytes | None
) -> None:
    letter = DeadLetter(value, key, "boom", 3, "t", 1, 42, datetime(2026, 1, 1, tzinfo=UTC))
    assert decode_dead_letter(encode_dead_letter(letter)) == letter


@given(user_id=user_ids, ts=st.datetimes() | st.datetimes(timezones=st.just(UTC)))
def test_the_message_is_written_as_before(user_id: str, ts: datetime) -> None:
    """orjson writes the ids and the time itself: the bytes are those of str() and isoformat()."""
    request = IssueRequest(uuid.uuid4(), user_id, uuid.uuid4(), ts)
    assert orjson.loads(encode(request)) == {
        "v": 1,
        "couponId": str(request.coupon_id),
        "userId": user_id,
        "requestId": str(request.request_id),
        "requestedAt": ts.isoformat(),
    }
