"""The README gives the two commands and a quick start made of real commands.

The settings reference (docs/configuration.md) is checked by test_docs_reference.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from app.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_gives_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "make run" in text and "make test" in text


def quick_start() -> str:
    """The shell block of the README's quick start (what a new user pastes)."""
    text = README.read_text()
    area = text.split("<!-- quick-start:start -->")[1].split("<!-- quick-start:end -->")[0]
    return area.split("```bash\n")[1].split("```")[0]


def test_the_quick_start_can_be_pasted_as_it_is() -> None:
    block = quick_start()
    assert "<id>" not in block  # no placeholder to fill in by hand
    assert "localhost:8080" in block and Settings.model_fields["api_port"].default == 8080


def test_the_quick_start_uses_only_real_subcommands_after_activating_the_venv() -> None:
    from app.cli import _parser

    block = quick_start()
    commands = re.findall(r"^coupon-issuer ([a-z-]+)", block, flags=re.MULTILINE)
    assert commands, "the quick start shows the CLI in a second terminal"
    sub = next(a for a in _parser()._actions if a.dest == "command")
    assert set(commands) <= set(sub.choices or ())
    assert block.index(". .venv/bin/activate") < block.index("coupon-issuer ")


def test_the_quick_start_coupon_is_valid_and_zone_less() -> None:
    from app.api.schemas import CouponCreate

    body = re.search(r"-d '(\{\n.*?\})'", quick_start(), flags=re.DOTALL)
    assert body is not None
    create = CouponCreate.model_validate_json(body.group(1))
    assert create.expiresAt.tzinfo is None  # shows the LocalDateTime form the Java clients send
