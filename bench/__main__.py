"""``python -m bench`` (``make bench``): start a private stack, run the phases, print the report."""

from __future__ import annotations

import argparse
import signal
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
    # A SIGTERM (a job's timeout, `kill`) or a closed terminal stops the run as Ctrl-C does:
    # every phase's cleanup runs, so no load generator, API or server it started outlives it.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    try:
        return run_bench(settings, args)
    except KeyboardInterrupt:
        print("bench interrupted: what it started is stopped", file=sys.stderr)
        return 130


# The guard matters: load generators are spawned processes that re-import this module.
if __name__ == "__main__":
    sys.exit(main())
