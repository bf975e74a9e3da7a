"""A bench stopped mid-sale, by Ctrl-C or by a SIGTERM (a job's timeout, a `kill`), says so and
exits, and nothing it started outlives it (load generators, API, consumers, lag exporter,
autoscaler, its temporary logs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.cpu import process_tree
from harness import wait_until_blocking
from tests.servers import database_url, redis_url

ROOT = Path(__file__).resolve().parents[2]


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _as_in_a_terminal() -> None:
    """A terminal's foreground job takes Ctrl-C; a test run started in the background (as a
    CI script may start it) passes on SIGINT ignored, so the child takes it back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _ctrl_c(bench: subprocess.Popen[str]) -> None:
    os.killpg(bench.pid, signal.SIGINT)  # what a terminal sends its foreground group


def _terminate(bench: subprocess.Popen[str]) -> None:
    bench.send_signal(signal.SIGTERM)  # to the bench alone, not its process group


@pytest.mark.parametrize("stop", [_ctrl_c, _terminate], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_bench_stops_everything_it_started(
    kafka_bootstrap: str, tmp_path: Path, stop: Callable[[subprocess.Popen[str]], None]
) -> None:
    log = tmp_path / "bench.err"
    env = {
        **os.environ,
        "COUPON_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "COUPON_DATABASE_URL": database_url(),
        "COUPON_REDIS_URL": redis_url(),
        "TMPDIR": str(tmp_path),
    }
    command = [sys.executable, "-m", "bench", "--no-api-limits", "--no-ceilings", "--no-baseline"]
    command += ["--no-drain-phase", "--requests", "1000000", "--sale-rounds", "1"]
    command += ["--sale-baseline", "", "--sale-warmup", "0", "--no-progress", "--concurrency", "8"]
    with log.open("w") as err:
        bench = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            start_new_session=True,  # a group of its own, as a terminal's foreground job
            preexec_fn=_as_in_a_terminal,
        )
        try:
            wait_until_blocking(
                lambda: "1,000,000 presses" in log.read_text() or bench.poll() is not None,
                120,
                "the bench's sale to begin",
            )
            assert bench.poll() is None, log.read_text()
            started = set(process_tree(bench.pid)) - {bench.pid}
            # the API, three consumers, the lag exporter, the autoscaler, a load generator
            assert len(started) >= 6, started

            stop(bench)
            assert bench.wait(60) == 130, log.read_text()
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait()
    assert "bench interrupted" in log.read_text()
    assert "Traceback" not in log.read_text()
    assert list(tmp_path.glob("coupon-*")) == []  # its temp logs are removed too
    wait_until_blocking(
        lambda: not [pid for pid in started if _running(pid)],
        10,
        "the bench's processes to be gone",
    )
