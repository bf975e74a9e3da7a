"""The one write-or-check step of the scripts that generate a reference doc from its source."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def refresh(doc: Path, render: Callable[[str], str], argv: list[str] | None, about: str) -> int:
    """Rewrite ``doc`` with ``render(current text)``; with ``--check``, fail if it would change."""
    parser = argparse.ArgumentParser(description=about.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    current = doc.read_text()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print(f"{doc.relative_to(ROOT)} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        doc.write_text(fresh)
        print(f"wrote {doc.relative_to(ROOT)}")
    return 0
