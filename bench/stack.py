"""The processes a bench run starts: isolated settings, the API, consumers, CPU accounting."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from app.adapters.kafka import partition_for
from app.config import Settings
from app.devstack import ManagedProcess, child_env, free_port, spawn

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def isolated(settings: Settings, label: str, **overrides: object) -> Settings:
    """Settings no other run shares: own schema, Redis prefix, topics, group and ports."""
    tag = f"{label}_{uuid.uuid4().hex[:8]}"
    values: dict[str, object] = {
        "db_schema": f"bench_{tag}",
        "redis_prefix": f"bench:{tag}",
        "topic": f"bench-{tag}",
        "dlq_topic": f"bench-{tag}.dlq",
        "consumer_group": f"bench-{tag}",
        "api_host": "127.0.0.1",
        "api_port": free_port(),
        "consumer_metrics_port": free_port(),
        "log_level": "WARNING",
        **overrides,
    }
    return settings.model_copy(update=values)


def partition_of(coupon_id: str, partitions: int) -> int:
    """The partition the producer's default partitioner picks for a coupon id key."""
    return partition_for(coupon_id.encode(), partitions)


def coupon_ids_covering(partitions: int, per_partition: int = 1) -> list[str]:
    """Fresh coupon ids, ``per_partition`` keyed to each partition (so every consumer works)."""
    wanted = {p: per_partition for p in range(partitions)}
    chosen: list[str] = []
    while any(wanted.values()):
        cid = str(uuid.uuid4())
        p = partition_of(cid, partitions)
        if wanted[p]:
            wanted[p] -= 1
            chosen.append(cid)
    return chosen


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


@dataclass
class BenchProcesses:
    """An API and consumers started for one settings object; stopped in order at the end."""

    settings: Settings
    log_dir: Path
    api: ManagedProcess | None = None
    consumers: list[ManagedProcess] = field(default_factory=list)
    consumer_ports: list[int] = field(default_factory=list)

    def start_api(self, workers: int) -> None:
        env = child_env(self.settings, {"COUPON_API_WORKERS": str(workers)})
        self.api = spawn("api", ["api"], env, self.log_dir / "api.log")

    def add_consumer(self, extra: dict[str, str] | None = None) -> ManagedProcess:
        port = free_port()
        index = len(self.consumers)
        env = child_env(self.settings, {"COUPON_CONSUMER_METRICS_PORT": str(port), **(extra or {})})
        log_file = self.log_dir / f"{self.settings.consumer_group}-{index}.log"
        proc = spawn(f"consumer-{index}", ["consumer"], env, log_file)
        self.consumers.append(proc)
        self.consumer_ports.append(port)
        return proc

    def live_consumers(self) -> int:
        return sum(1 for p in self.consumers if p.popen.poll() is None)

    async def wait_api_ready(self, timeout_s: float = 60) -> None:
        url = f"http://127.0.0.1:{self.settings.api_port}/readyz"
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.api is not None and self.api.popen.poll() is not None:
                    raise RuntimeError(f"the API exited with {self.api.popen.returncode}")
                try:
                    async with http.get(url) as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"the API was not ready within {timeout_s}s")

    async def wait_assigned(self, partitions: int, timeout_s: float = 60) -> None:
        """Wait until the live consumers own every partition between them, each at least one."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                owned = [await self._assigned(http, port) for port in self.consumer_ports]
                if sum(owned) == partitions and min(owned) >= min(1, partitions):
                    return
                for proc in self.consumers:
                    if proc.popen.poll() is not None:
                        raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}")
                await asyncio.sleep(0.1)
        raise TimeoutError(f"consumers did not share {partitions} partitions in {timeout_s}s")

    @staticmethod
    async def _assigned(http: aiohttp.ClientSession, port: int) -> int:
        try:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                text = await r.text()
        except (aiohttp.ClientError, TimeoutError):
            return 0
        for line in text.splitlines():
            if line.startswith("coupon_consumer_assigned_partitions "):
                return int(float(line.split()[1]))
        return 0

    def pids(self) -> dict[str, list[int]]:
        api = process_tree(self.api.popen.pid) if self.api else []
        return {"api": api, "consumers": [p.popen.pid for p in self.consumers]}

    def stop_consumers(self) -> None:
        for proc in self.consumers:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.consumers:
            proc.stop()

    def stop(self) -> None:
        self.stop_consumers()  # consumers first: they commit and leave the group
        if self.api:
            self.api.stop()
