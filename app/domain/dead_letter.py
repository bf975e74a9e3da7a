"""The dead-letter envelope: the original message plus why and where it failed."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

import orjson


@dataclass(frozen=True, slots=True)
class DeadLetter:
    original_value: bytes | None
    original_key: bytes | None
    error: str
    attempts: int
    topic: str
    partition: int
    offset: int
    failed_at: datetime


@dataclass(frozen=True, slots=True)
class Entry:
    """A dead letter as read from its topic: where it sits there, and the envelope."""

    partition: int
    offset: int
    letter: DeadLetter


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """JSON with the original bytes base64-encoded (a poison message may not be text)."""
    return orjson.dumps(
        {
            "v": 1,
            "error": letter.error,
            "attempts": letter.attempts,
            "source": {
                "topic": letter.topic,
                "partition": letter.partition,
                "offset": letter.offset,
            },
            "failedAt": letter.failed_at.isoformat(),
            "key": _b64(letter.original_key),
            "value": _b64(letter.original_value),
        }
    )


def decode_dead_letter(raw: bytes) -> DeadLetter:
    doc = orjson.loads(raw)
    source = doc["source"]
    return DeadLetter(
        original_value=_unb64(doc["value"]),
        original_key=_unb64(doc["key"]),
        error=doc["error"],
        attempts=int(doc["attempts"]),
        topic=source["topic"],
        partition=int(source["partition"]),
        offset=int(source["offset"]),
        failed_at=datetime.fromisoformat(doc["failedAt"]),
    )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)
