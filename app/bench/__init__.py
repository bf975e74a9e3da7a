"""The benchmark and load test (`coupon-issuer bench`, `make bench`)."""

from __future__ import annotations

from app.bench.cli import run_bench
from app.bench.options import add_bench_arguments

__all__ = ["add_bench_arguments", "run_bench"]
