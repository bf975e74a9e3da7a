"""``python -m bench`` (``make bench``): start a private stack, run the phases, print the report."""

from __future__ import annotations

import argparse
import sys

from app.config import Settings
from app.observability.logs import configure_logging
from bench.cli import run_bench
from bench.options import add_bench_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, "WARNING")
    return run_bench(settings, args)


# The guard matters: load generators are spawned processes that re-import this module.
if __name__ == "__main__":
    sys.exit(main())
