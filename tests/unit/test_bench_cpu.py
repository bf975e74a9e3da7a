"""The bench's CPU accounting (bench/cpu.py) read from real processes' /proc figures (a process, a
process tree whose child is reaped meanwhile), and how the report names a component it could not
meter."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from app.local.processes import ManagedProcess
from bench.cpu import (
    BROKER,
    COMPONENTS,
    EXTERNAL_BROKER,
    NOT_MEASURED,
    POSTGRES,
    REDIS,
    CpuMeter,
    broker_pids,
    children,
    cpu_seconds,
    jit_cpu_seconds,
    ms_per,
    per_component,
    server_groups,
    tree_cpu_seconds,
)
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


@contextlib.contextmanager
def python_child(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``python -c <args>``, talked to over stdin/stdout; closing stdin ends it."""
    child = subprocess.Popen(
        [sys.executable, "-c", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield child
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[str]]:
    with python_child(_BURNER, "0.1", "0.2", "0.3") as child:
        yield child


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


def test_the_report_names_a_component_it_did_not_meter_instead_of_a_number() -> None:
    def cpu_rows(broker_ms: float | None) -> dict[str, str]:
        per = {"api": 0.2, "consumers": 0.05, BROKER: broker_ms, POSTGRES: 0.1, "sum": 0.35}
        report = {
            "whole_system": {
                "current": {
                    "cpu_ms_per_issued_coupon": per,
                    "outside_api_ms": 0.15,
                    "issued_per_s": 900.0,
                }
            }
        }
        prefix = "CPU ms per issued coupon: "
        return {r[0][len(prefix) :]: r[1] for r in rows(report) if r[0].startswith(prefix)}

    measured = cpu_rows(0.125)
    assert measured["api"] == "0.2000" and measured[BROKER] == "0.1250"
    assert measured[REDIS] == NOT_MEASURED  # a Redis the run did not start
    assert cpu_rows(None)[BROKER] == EXTERNAL_BROKER


# A parent that starts a burning child, says the child's pid and that it has burnt 0.2 CPU-s,
# then on a line from the test ends and reaps the child (its CPU moves into the parent's cutime).
_PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], "0.2"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
print(child.pid, flush=True)
print(child.stdout.readline().strip(), flush=True)
sys.stdin.readline()
child.stdin.close()
child.wait()
print("reaped", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def parent() -> Iterator[subprocess.Popen[str]]:
    with python_child(_PARENT, _BURNER) as proc:
        yield proc


def test_a_tree_counts_live_children_and_reaped_ones_once(
    parent: subprocess.Popen[str],
) -> None:
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert float(parent.stdout.readline()) == 0.2  # the child burnt 0.2 CPU-s and idles, alive
    assert children(parent.pid) == [child]
    alive = tree_cpu_seconds(parent.pid)
    assert alive >= 0.2 - _TICKS
    # excluding the child leaves the parent's own (and nothing it reaped yet)
    assert tree_cpu_seconds(parent.pid, {child}) == pytest.approx(cpu_seconds(parent.pid))
    assert alive - tree_cpu_seconds(parent.pid, {child}) >= 0.2 - _TICKS

    meter = CpuMeter({POSTGRES: [parent.pid]})
    meter.start()
    _go_on(parent)  # the parent ends the child and reaps it
    assert parent.stdout.readline().strip() == "reaped"
    meter.stop()
    assert children(parent.pid) == []
    assert cpu_seconds(parent.pid) >= alive - _TICKS  # the child's CPU is in the parent's cutime
    assert meter.used[POSTGRES] < 0.1  # reaping moved the child's 0.2 s, it did not add them


def test_components_per_issued_coupon_sum_what_was_metered() -> None:
    per = per_component({"api": 0.2, "consumers": 0.1, POSTGRES: 0.1}, 1000)
    assert per["api"] == pytest.approx(0.2) and per[POSTGRES] == pytest.approx(0.1)
    assert per[REDIS] is None and per[BROKER] is None  # not metered: named, not zero
    assert per["sum"] == pytest.approx(0.4)
    assert set(per) == {*COMPONENTS, "sum"}


def test_only_servers_the_run_started_are_metered(burner: subprocess.Popen[str]) -> None:
    popen = cast("subprocess.Popen[bytes]", burner)
    started = [ManagedProcess("PostgreSQL", popen), ManagedProcess("kafka-1", popen)]
    assert server_groups(started) == {POSTGRES: [burner.pid]}
    assert server_groups([]) == {}


def _burn_in_a_thread_named(comm: str, seconds: float) -> None:
    """A thread of this process, named as /proc shows it, that burns ``seconds`` of CPU."""

    def burn() -> None:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(comm)
        started = time.thread_time()
        while time.thread_time() - started < seconds:
            pass

    thread = threading.Thread(target=burn)
    thread.start()
    thread.join()


def test_a_jvms_jit_cpu_is_its_compiler_threads_cpu_and_no_other_threads() -> None:
    """The broker's JIT share is read from HotSpot's "C1/C2 CompilerThread" threads only."""
    me = os.getpid()
    # a thread that ends is no longer in /proc: read while one of each kind burns and waits
    done = threading.Event()
    burnt = threading.Event()

    def compiler() -> None:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text("C2 CompilerThre")
        started = time.thread_time()
        while time.thread_time() - started < 0.3:
            pass
        burnt.set()
        done.wait(10)

    before = jit_cpu_seconds(me)
    thread = threading.Thread(target=compiler)
    thread.start()
    try:
        assert burnt.wait(10)
        _burn_in_a_thread_named("data-plane-kafk", 0.3)  # a request handler: not the JIT
        used = jit_cpu_seconds(me) - before
        assert 0.25 <= used < 0.5, used
    finally:
        done.set()
        thread.join()
    assert jit_cpu_seconds(2**22 + 7) == 0.0  # a pid that is gone reads 0
