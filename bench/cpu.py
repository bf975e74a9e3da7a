"""CPU accounting of the processes a bench run starts (the harness starts them), from /proc.

A group is a list of root processes, each counted with its whole tree: itself, its live
descendants (read one by one) and the descendants already reaped (their CPU is in their parent's
cutime / cstime). That is how a PostgreSQL is metered: the postmaster, its live backends and
background workers, and the backends that ended during the window, whose CPU the postmaster
collected when it reaped them.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.local.processes import ManagedProcess
from harness import ServiceProcesses

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_JIT_THREAD = re.compile(r"C\d CompilerThre")  # HotSpot's compiler threads, as /proc names them
# A broker whose JIT compiler spent less than this per issued coupon in a warm-up sale is warm:
# a long-running broker pays its compiling once, and a sale measured while it still compiles
# charges that to whichever variant runs first (first sales measured 0.5 ms a coupon, later
# ones 0.33-0.37, most of the gap the broker's compiler threads).
JIT_SETTLED_MS = 0.005

# The meter group of the broker's JVM, and what the report says when the run did not start it.
BROKER = "broker"
EXTERNAL_BROKER = "not measured (external broker)"
# The whole system's components, in the report's order (docs/performance.md explains each).
POSTGRES = "postgres"
REDIS = "redis"
LAG_EXPORTER = "lag_exporter"  # `coupon-issuer lag-exporter`: the exporter and the reconciler
AUTOSCALER = "autoscaler"  # the local autoscaler's lag reads and decisions (bench/autoscaler.py)
COMPONENTS = ("api", "consumers", BROKER, POSTGRES, REDIS, LAG_EXPORTER, AUTOSCALER)
NOT_MEASURED = "not measured (external server)"
# The names app/local/servers.py gives the servers it starts, as the report's groups.
_SERVER_GROUPS = {"PostgreSQL": POSTGRES, "Redis": REDIS}


def _ticks(stat: Path, fields: int) -> int:
    """The first ``fields`` of utime, stime, cutime, cstime in a ``stat`` file (0 if gone)."""
    try:
        after_name = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    # after_name[0] is the state (field 3); utime..cstime are fields 14..17
    return sum(int(x) for x in after_name[11 : 11 + fields])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children (0 if it is gone)."""
    return _ticks(Path(f"/proc/{pid}/stat"), 4) / _CLK_TCK


def jit_cpu_seconds(pid: int) -> float:
    """CPU seconds of a JVM's JIT compiler threads (``C1 CompilerThre…``, ``C2 CompilerThre…``):
    the part of a broker's CPU a long-running one pays once, at its start (0 if it is gone)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    total = 0
    for task in tasks:
        try:
            compiler = _JIT_THREAD.match((task / "comm").read_text())
        except OSError:  # the thread ended meanwhile
            continue
        if compiler:
            total += _ticks(task / "stat", 2)  # a thread's utime and stime
    return total / _CLK_TCK


def children(pid: int) -> list[int]:
    """The live children of ``pid`` (of its main thread, which is what forks here)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (the API's uvicorn workers)."""
    found = [pid]
    for child in children(pid):
        found.extend(process_tree(child))
    return found


def tree_cpu_seconds(root: int, exclude: Collection[int] = ()) -> float:
    """CPU seconds of ``root`` and every descendant, live or reaped.

    ``exclude``: live descendants not to count, with their own subtrees (the bench's own
    PostgreSQL connections). A descendant reaped meanwhile is in ``root``'s cutime whoever it
    was, so the bench keeps its excluded connections open until the meter stops.
    """
    total = cpu_seconds(root)
    for child in children(root):
        if child not in exclude:
            total += tree_cpu_seconds(child, exclude)
    return total


@dataclass
class CpuMeter:
    """CPU seconds used by groups of process trees between ``start`` and ``stop``."""

    groups: dict[str, list[int]]
    exclude: set[int] = field(default_factory=set)
    _before: dict[int, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    _t0: float = 0.0

    def _read(self, pid: int) -> float:
        return tree_cpu_seconds(pid, self.exclude)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._before = {pid: self._read(pid) for pids in self.groups.values() for pid in pids}

    def stop(self) -> None:
        self.wall = time.monotonic() - self._t0
        self.used = {
            name: sum(max(0.0, self._read(pid) - self._before.get(pid, 0.0)) for pid in pids)
            for name, pids in self.groups.items()
        }

    def shares(self, cores: int) -> dict[str, float]:
        """Each group's share of the machine's CPU over the measured wall time."""
        if self.wall <= 0:
            return {}
        return {name: used / (self.wall * cores) for name, used in self.used.items()}


def process_groups(procs: ServiceProcesses) -> dict[str, list[int]]:
    """The roots to meter: the API (its uvicorn workers are its tree), the consumers."""
    api = [procs.api.popen.pid] if procs.api else []
    return {"api": api, "consumers": [p.popen.pid for p in procs.consumers]}


def server_groups(started: Iterable[ManagedProcess]) -> dict[str, list[int]]:
    """The PostgreSQL and Redis the run started, by their report names (``postgres``,
    ``redis``); a server the run did not start is absent (its processes are not ours)."""
    return {_SERVER_GROUPS[p.name]: [p.popen.pid] for p in started if p.name in _SERVER_GROUPS}


def local_postmaster(backend_pid: int) -> int | None:
    """The postmaster of a PostgreSQL backend on this machine (its parent), None if the pid is
    no PostgreSQL process here (a server elsewhere, or in another pid namespace)."""

    def stat(pid: int) -> tuple[str, int] | None:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        comm = text[text.index("(") + 1 : text.rindex(")")]
        return comm, int(text.rsplit(")", 1)[1].split()[1])

    backend = stat(backend_pid)
    if backend is None or backend[0] != "postgres":
        return None
    parent = stat(backend[1])
    return backend[1] if parent is not None and parent[0] == "postgres" else None


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


def per_component(used: Mapping[str, float], count: int) -> dict[str, float | None]:
    """CPU ms per unit of work of every component of the system, None for one not metered, and
    ``sum`` over those metered."""
    ms = ms_per(dict(used), count)
    out: dict[str, float | None] = {name: ms.get(name) for name in COMPONENTS}
    out["sum"] = sum(v for v in out.values() if v is not None)
    return out
