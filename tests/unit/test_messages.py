"""The message table and Accept-Language negotiation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.api.errors import GATE_ANSWERS
from app.api.messages import MESSAGES, Lang, negotiate, text
from app.domain.outcomes import GateOutcome

APP = Path(__file__).resolve().parents[2] / "app"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, Lang.EN),
        ("", Lang.EN),
        ("ko", Lang.KO),
        ("KO", Lang.KO),
        ("ko-KR", Lang.KO),
        (b"ko-KR", Lang.KO),  # the fast path hands over raw header bytes
        ("ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7", Lang.KO),  # a Korean browser
        ("en-US,en;q=0.9,ko;q=0.8", Lang.EN),
        ("en;q=0.5, ko;q=0.8", Lang.KO),  # order does not matter, q does
        ("ko;q=0.8, en;q=0.8", Lang.KO),  # a tie: the first listed wins
        ("ko;q=0, en", Lang.EN),  # q=0 means "not this one"
        ("ko;q=0", Lang.EN),
        ("fr-FR, ko;q=0.3", Lang.KO),  # unsupported ranges are skipped
        ("fr-FR, de", Lang.EN),
        ("*", Lang.EN),
        ("*;q=0.5, ko;q=0.4", Lang.EN),
        ("ko;q=abc, en;q=0.1", Lang.EN),  # a malformed q ignores that range
        ("ko;q=2", Lang.EN),  # out of range: ignored
        ("ko ; q = 0.7 , en;q=0.6", Lang.KO),  # optional whitespace
        ("kok", Lang.EN),  # a different language, not a prefix match
    ],
)
def test_accept_language_picks_the_best_supported_language(
    header: str | bytes | None, expected: Lang
) -> None:
    assert negotiate(header) is expected


def test_every_message_is_in_english_and_korean() -> None:
    for key, entry in MESSAGES.items():
        assert set(entry) == set(Lang), key
        assert all(entry[lang].strip() for lang in Lang), key


def test_every_gate_outcome_has_a_status_and_messages() -> None:
    """A new outcome without a table entry would answer 500 on the hot path."""
    for outcome in GateOutcome:
        assert outcome in GATE_ANSWERS
        assert text(outcome.value, Lang.EN) != text(outcome.value, Lang.KO)


def test_the_accepted_press_answers_as_the_java_service_did_in_korean() -> None:
    assert text("ACCEPTED", Lang.KO) == "쿠폰 발급 요청이 접수되었습니다. 순차적으로 처리됩니다."
    assert text("ACCEPTED") == "Your request is queued; the coupon is issued in order."


def test_every_reason_the_code_answers_with_has_a_message() -> None:
    """A refusal whose key is missing from the table would be a 500 at run time."""
    source = "\n".join(p.read_text() for p in APP.rglob("*.py"))
    reasons = re.findall(r'(?:refusal|_reject)\(\s*(?:send,\s*)?\d{3},\s*"([A-Z_]+)"', source)
    keys = re.findall(r'key="([A-Za-z_.]+)"', source)
    assert len(reasons) >= 8 and keys  # the scan finds the call sites
    assert set(reasons + keys) <= set(MESSAGES), set(reasons + keys) - set(MESSAGES)
