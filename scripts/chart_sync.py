#!/usr/bin/env python3
"""Copy dashboards/*.json and dashboards/alerts.yml into the chart (charts/coupon-issuer/dashboards/).

dashboards/ is the single source of truth; the chart can only package files inside its own folder,
so it carries byte-for-byte copies. Stale copies (files removed from dashboards/) are deleted.
``--check`` changes nothing and exits 1 when the copies differ from the sources.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "dashboards"
TARGET = ROOT / "charts" / "coupon-issuer" / "dashboards"
ALERTS = "alerts.yml"


def synced_names(folder: Path) -> set[str]:
    """Names of the files that take part in the sync (dashboards and the alert rules)."""
    if not folder.is_dir():
        return set()
    return {
        p.name
        for p in folder.iterdir()
        if p.is_file() and (p.suffix == ".json" or p.name == ALERTS)
    }


def differences() -> list[str]:
    """Human-readable list of what is out of sync (empty when in sync)."""
    wanted, present = synced_names(SOURCE), synced_names(TARGET)
    out = [f"missing in chart: {n}" for n in sorted(wanted - present)]
    out += [f"stale in chart: {n}" for n in sorted(present - wanted)]
    out += [
        f"differs: {n}"
        for n in sorted(wanted & present)
        if (SOURCE / n).read_bytes() != (TARGET / n).read_bytes()
    ]
    return out


def sync() -> list[str]:
    """Make the chart copies equal to the sources; return what changed."""
    changes = differences()
    TARGET.mkdir(parents=True, exist_ok=True)
    for name in synced_names(TARGET) - synced_names(SOURCE):
        (TARGET / name).unlink()
    for name in synced_names(SOURCE):
        shutil.copyfile(SOURCE / name, TARGET / name)
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report differences")
    args = parser.parse_args(argv)
    changes = differences() if args.check else sync()
    for line in changes:
        print(f"chart-sync: {line}", file=sys.stderr)
    if args.check and changes:
        print("chart-sync: out of sync; run `make chart-sync`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
