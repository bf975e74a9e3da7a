"""``python -m app.bench``: the benchmark without the ``coupon-issuer`` entry point (make bench)."""

from __future__ import annotations

import argparse
import sys

from app.bench.cli import run_bench
from app.bench.options import add_bench_arguments
from app.config import Settings
from app.observability.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coupon-issuer bench", description=__doc__)
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, "WARNING")
    return run_bench(settings, args)


# The guard matters: load generators are spawned processes that re-import this module.
if __name__ == "__main__":
    sys.exit(main())
