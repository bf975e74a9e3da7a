"""Render the dashboards to dashboards/*.json, or check that the checked-in files are current.

tests/unit/test_dashboards.py fails when the checked-in JSON differs from what this renders, and
tests/e2e/test_prometheus.py asks a real Prometheus for every expression in it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards.src import lag, overview
from dashboards.src.common import SCHEMA_VERSION

DASHBOARD_DIR = Path(__file__).resolve().parents[1]
BOARDS: dict[str, Callable[[], Dashboard]] = {
    overview.FILE: overview.overview,
    lag.FILE: lag.consumer_lag,
}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard (stable: sorted keys, two-space indent)."""
    encoder = JSONEncoder(indent=2, sort_keys=True, ensure_ascii=False)
    rendered = {}
    for name, builder in BOARDS.items():
        board = builder().build()
        board.schema_version = SCHEMA_VERSION
        rendered[name] = encoder.encode(board) + "\n"
    return rendered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.src", description=__doc__)
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are stale")
    args = parser.parse_args(argv)
    rendered = render()
    stale = [
        name
        for name, text in rendered.items()
        if not (args.out / name).exists() or (args.out / name).read_text() != text
    ]
    if args.check:
        for name in stale:
            print(f"stale: {args.out / name} (run `make dashboards`)", file=sys.stderr)
        return 1 if stale else 0
    for name, text in rendered.items():
        (args.out / name).write_text(text)
    print(f"wrote {', '.join(sorted(rendered))} to {args.out}")
    return 0
