"""CPU accounting of the processes a bench run starts (the harness starts them)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from app.local.processes import ManagedProcess
from harness import ServiceProcesses

_CLK_TCK = os.sysconf("SC_CLK_TCK")

# The meter group of the broker's JVM, and what the report says when the run did not start it.
BROKER = "broker"
EXTERNAL_BROKER = "not measured (external broker)"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # fields[0] is the state (field 3); utime..cstime are fields 14..17
    return sum(int(x) for x in fields[11:15]) / _CLK_TCK


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (the API's uvicorn workers)."""
    found = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in children:
        found.extend(process_tree(int(child)))
    return found


@dataclass
class CpuMeter:
    """CPU seconds used by groups of processes between ``start`` and ``stop``."""

    groups: dict[str, list[int]]
    _before: dict[int, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    _t0: float = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._before = {pid: cpu_seconds(pid) for pids in self.groups.values() for pid in pids}

    def stop(self) -> None:
        self.wall = time.monotonic() - self._t0
        self.used = {
            name: sum(max(0.0, cpu_seconds(pid) - self._before.get(pid, 0.0)) for pid in pids)
            for name, pids in self.groups.items()
        }

    def shares(self, cores: int) -> dict[str, float]:
        """Each group's share of the machine's CPU over the measured wall time."""
        if self.wall <= 0:
            return {}
        return {name: used / (self.wall * cores) for name, used in self.used.items()}


def process_groups(procs: ServiceProcesses) -> dict[str, list[int]]:
    """The pids to meter: the API with its uvicorn workers, and the consumers."""
    api = process_tree(procs.api.popen.pid) if procs.api else []
    return {"api": api, "consumers": [p.popen.pid for p in procs.consumers]}


def broker_pids(started: Iterable[ManagedProcess]) -> list[int] | None:
    """The JVMs of the Kafka nodes the run started (app/local/kafka.py names them ``kafka-N``).

    None when the run uses a broker it did not start (``COUPON_KAFKA_BOOTSTRAP``): its process is
    not ours to read, and may be on another machine.
    """
    pids = [p.popen.pid for p in started if p.name.startswith("kafka-")]
    return pids or None


def ms_per(used: dict[str, float], count: int) -> dict[str, float]:
    """Each group's CPU milliseconds per unit of work (``count`` presses, say)."""
    return {name: 1000 * seconds / max(1, count) for name, seconds in used.items()}
