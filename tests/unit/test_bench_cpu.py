"""The bench's CPU accounting (bench/cpu.py) read from a real process's /proc figures, and how the
report names a broker it could not meter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import cast

import pytest

from app.local.processes import ManagedProcess
from bench.cpu import BROKER, EXTERNAL_BROKER, CpuMeter, broker_pids, cpu_seconds, ms_per
from bench.report import rows

# Burns CPU until its own CPU clock passes each mark, says so on stdout and waits, idle, for a line
# on stdin: the test reads /proc at known amounts of work, not after guessed wall times.
_BURNER = """
import sys, time
for mark in sys.argv[1:]:
    while time.process_time() < float(mark):
        pass
    print(mark, flush=True)
    sys.stdin.readline()
"""
# /proc counts in clock ticks (1/100 s here), the child's own clock in nanoseconds.
_TICKS = 0.02


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(
        [sys.executable, "-c", _BURNER, "0.1", "0.2", "0.3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield child
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def _reached(child: subprocess.Popen[str]) -> float:
    """Wait until the child is idle at its next mark; that mark (CPU seconds it has used)."""
    assert child.stdout is not None
    return float(child.stdout.readline())


def _go_on(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.write("\n")
    child.stdin.flush()


def test_cpu_seconds_of_a_burning_process_is_positive_and_grows(
    burner: subprocess.Popen[str],
) -> None:
    samples = []
    for _ in range(3):
        mark = _reached(burner)
        sample = cpu_seconds(burner.pid)
        _go_on(burner)
        assert sample > 0
        assert sample >= mark - _TICKS  # the child used at least ``mark`` CPU seconds
        samples.append(sample)
    assert samples == sorted(samples) and samples[-1] > samples[0]


def test_the_meter_counts_what_a_process_used_between_start_and_stop(
    burner: subprocess.Popen[str],
) -> None:
    _reached(burner)
    meter = CpuMeter({"burner": [burner.pid]})
    meter.start()
    _go_on(burner)
    _reached(burner)  # 0.1 CPU-s more, then idle
    meter.stop()
    assert 0.1 - _TICKS <= meter.used["burner"] <= 0.1 + 2 * _TICKS
    per = ms_per(meter.used, 100)
    assert per["burner"] == pytest.approx(1000 * meter.used["burner"] / 100)


def test_a_process_that_is_gone_reads_zero() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    assert cpu_seconds(child.pid) == 0.0


def test_only_a_broker_the_run_started_is_metered(burner: subprocess.Popen[str]) -> None:
    popen = cast("subprocess.Popen[bytes]", burner)
    assert broker_pids([ManagedProcess("kafka-1", popen)]) == [burner.pid]
    assert broker_pids([ManagedProcess("redis", popen)]) is None  # the broker is external
    assert broker_pids([]) is None


def test_the_report_names_an_external_broker_instead_of_a_number() -> None:
    def cpu_row(broker_ms: float | None) -> str:
        report = {
            "sale": {
                "cpu_ms_per_accepted_press": {"api": 0.2, "consumers": 0.05, BROKER: broker_ms}
            }
        }
        (row,) = [r for r in rows(report) if r[0].startswith("CPU ms per accepted press")]
        return row[1]

    assert cpu_row(None) == f"0.200 / 0.050 / {EXTERNAL_BROKER}"
    assert cpu_row(0.125) == "0.200 / 0.050 / 0.125"
