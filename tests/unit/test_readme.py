"""The README documents every setting, and only real ones."""

from __future__ import annotations

import re
from pathlib import Path

from app.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_table_and_nothing_else() -> None:
    text = README.read_text()
    table = text.split("<!-- config-table:start -->")[1].split("<!-- config-table:end -->")[0]
    documented = set(re.findall(r"`COUPON_([A-Z0-9_]+)`", table))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_readme_gives_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "make run" in text and "make test" in text
