"""A small run of the benchmark (the full one is `make bench`): every phase, a few hundred presses.

It checks what the report promises: the correctness verdict is computed and true, every section
and ratio is present, and the JSON and the plot are written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.config import Settings
from bench.api_limits import baseline_tree
from bench.cli import bench
from bench.options import BenchOptions
from bench.report import print_table, write_json, write_plot
from tests.servers import database_url, redis_url


def test_a_small_bench_run_reports_correct_results(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url(), redis_url=redis_url()
    )
    opts = BenchOptions(
        requests=400,
        duplicate_ratio=0.1,
        coupons_per_partition=1,
        concurrency=16,
        generators=2,
        api_workers=1,
        consumers=3,
        partitions=3,
        max_load_seconds=20,
        drain_timeout_s=20,
        backlog=3000,
        naive_seconds=1.0,
        naive_backlog=1000,
        progress=False,
        log_dir=tmp_path / "logs",
        api_seconds=1,
        api_rounds=1,
        baseline_ref="HEAD",  # the wrk phases against the committed code, side by side
        sale_baseline_ref="HEAD",  # and the whole stack's sale
        api_env=(("COUPON_PRODUCER_LINGER_MS", "1"),),  # a knob of the current API only
    )

    report = bench(settings, opts)

    sale = report["sale"]
    assert sale["sent"] == 400 and sale["not_sent"] == 0
    assert sale["accepted"] > 0 and sale["accepted_per_s"] > 0
    assert set(sale["latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert sale["answers"]["DUPLICATE"] > 0  # a tenth of the presses repeat a user
    assert sale["drained"] and sale["drain_after_last_answer_s"] is not None
    correctness = sale["correctness"]
    assert correctness["ok"], correctness
    assert correctness["issued"] == correctness["expected_issued"] > 0
    assert correctness["accepted"] == sale["accepted"]
    assert correctness["accepted_without_outcome"] == 0
    assert set(sale["end_to_end_ms"]) == {"p50", "p95", "p99", "max"}
    assert sale["cpu_share"]["generators"] > 0 and sale["cpu_share"]["api"] > 0
    # the whole system, per issued coupon: every component this run started is metered
    per = sale["cpu_ms_per_issued_coupon"]
    assert per["api"] > 0 and per["consumers"] > 0, per
    # a run this short may meet neither's poll: metered (a number), not necessarily busy
    assert per["lag_exporter"] is not None and per["autoscaler"] is not None, per
    assert per["sum"] >= sum(v for k, v in per.items() if k != "sum" and v is not None) * 0.999
    assert sale["issued_per_s"] > 0
    whole = report["whole_system"]
    assert whole["current"]["correct"] and whole["baseline"]["correct"]
    assert whole["after_vs_before"]["sum"] is not None
    assert whole["after_vs_before"]["issued_per_s"] is not None
    assert 1 <= len(whole["warmup_broker_jit_ms"]) <= opts.sale_warmups  # unrecorded, before

    assert report["drain"]["drained"] and report["drain"]["processed"] == 3000
    assert report["drain"]["issues_per_s"] > 0 and report["drain"]["broker_produce_per_s"] > 0
    assert report["baseline"]["batch_max"] == 1 and report["baseline"]["issues_per_s"] > 0
    limits = report["limits"]
    assert limits["postgres_insert_rows_per_s"] > 0 and limits["redis_gate_pipelined_per_s"] > 0
    assert all(v is not None for v in report["ratios"].values()), report["ratios"]
    assert report["machine"]["cores"] >= 1

    api = report["api"]
    assert api["ceiling"]["per_s"] > 0 and api["ceiling"]["codes"].keys() == {"202"}
    for variant in ("current", "baseline"):
        v = api[variant]
        assert v["press"]["codes"].get("202", 0) > 0 and v["press"]["5xx"] == 0
        assert v["press"]["cpu_ms_per"] > 0
        assert v["status"]["codes"].get("200", 0) > 0 and v["status"]["cpu_ms_per"] > 0
        assert v["burst"]["codes"].get("202", 0) > 0
        assert v["outcomes"]["ok"], v["outcomes"]  # a row for every 202 wrk counted
    assert api["current_env"] == {"COUPON_PRODUCER_LINGER_MS": "1"}
    assert set(api["after_vs_before"]) == {
        "press_per_s",
        "press_cpu_ms",
        "status_per_s",
        "status_cpu_ms",
        "burst_per_s",
    }

    write_json(report, tmp_path / "bench.json")
    write_plot(report, tmp_path / "bench.png")
    assert json.loads((tmp_path / "bench.json").read_text())["sale"]["correctness"]["ok"]
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    print_table(report)


def test_the_baseline_runs_its_own_code_without_packages_it_did_not_lock(tmp_path: Path) -> None:
    tree = baseline_tree("HEAD", tmp_path / "before")
    assert tree is not None and (tree / "app" / "api" / "app.py").is_file()
    blocked = (tree / "sitecustomize.py").read_text()
    assert "sys.modules[_name] = None" in blocked
    assert baseline_tree("no-such-revision", tmp_path / "none") is None

    # make bench's default "before" locked no hiredis: its processes cannot import it
    before = baseline_tree("414dbf1", tmp_path / "sale-scale-before")
    assert before is not None
    probe = subprocess.run(
        [sys.executable, "-c", "import redis.utils as u; print(u.HIREDIS_AVAILABLE)"],
        env={**os.environ, "PYTHONPATH": str(before), "PYTHONSAFEPATH": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "False"
