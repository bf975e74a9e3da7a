"""A real Redis Cluster on loopback: N masters (Debian's redis-server), no replicas, no
persistence, on free ports; created with ``redis-cli --cluster create``.

Every node keeps its cluster config file in ``directory``, so a node killed and started again
rejoins with the same id and slots, and empty: that is a master restart (or flush) mid-sale.
Only the processes started here are ever stopped.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from app.local.processes import ManagedProcess, detach_and_die_with_parent, free_port, wait_for_port
from app.local.servers import tail
from harness.wait import wait_until

# How long a silent node takes to be marked failed (Redis's default is 15 s). Short, so that a
# killed master is declared failed, and a restarted one cleared, within seconds.
NODE_TIMEOUT_MS = 2000
_START_TIMEOUT_S = 30.0


@dataclass
class LoopbackRedisCluster:
    """``masters`` redis-server processes joined into one cluster (``start()``, ``stop()``)."""

    directory: Path
    masters: int = 3
    ports: list[int] = field(default_factory=list)
    bus_ports: dict[int, int] = field(default_factory=dict)
    processes: dict[int, ManagedProcess] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """A seed URL (the first node); the client learns every node from it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    async def start(self) -> LoopbackRedisCluster:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(self.masters):
            port = free_port()
            self.ports.append(port)
            self.bus_ports[port] = free_port()  # not port + 10000, which may be out of range
            self._launch(port)
        cli = shutil.which("redis-cli") or "redis-cli"
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        create = [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
        done = await asyncio.to_thread(
            subprocess.run, create, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        await self.wait_healthy()
        return self

    def _launch(self, port: int) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        args = [
            binary,
            *("--port", str(port), "--bind", "127.0.0.1"),
            *("--cluster-enabled", "yes", "--cluster-port", str(self.bus_ports[port])),
            *("--cluster-config-file", str(self.directory / f"nodes-{port}.conf")),
            *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            *("--dir", str(self.directory)),
        ]
        with (self.directory / f"redis-{port}.log").open("ab") as log:
            popen = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=detach_and_die_with_parent
            )
        self.processes[port] = ManagedProcess(f"redis-{port}", popen)
        wait_for_port("127.0.0.1", port, 10, f"redis-server on {port}")

    async def wait_healthy(self, timeout: float = _START_TIMEOUT_S) -> None:
        """Wait until every node says ``cluster_state:ok``."""

        def all_ok() -> bool:
            return all(self.state(port) == "ok" for port in self.ports)

        await wait_until(all_ok, timeout, f"cluster_state:ok on {self.ports}")

    def state(self, port: int) -> str | None:
        """``cluster_state`` as node ``port`` sees it (None: it does not answer)."""
        try:
            return str(self.ask(port, "CLUSTER INFO")["cluster_state"])
        except redis.RedisError:
            return None

    def ask(self, port: int, *command: str) -> Any:
        """One command to one node, no redirection followed."""
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2) as node:
            return node.execute_command(*command)

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if self.processes[p].popen.poll() is None]

    def owner(self, key: str) -> int:
        """The port of the master serving ``key``'s slot, as the cluster itself says."""
        port = self.live_ports()[0]
        slot = int(self.ask(port, "CLUSTER KEYSLOT", key))
        for start, end, primary, *_ in self.ask(port, "CLUSTER SLOTS"):
            if int(start) <= slot <= int(end):
                return int(primary[1])
        raise LookupError(f"slot {slot} has no master")

    def kill(self, port: int) -> None:
        """SIGKILL one node: it loses everything it held."""
        self.processes[port].stop(signal.SIGKILL)

    async def restart(self, port: int) -> None:
        """Start a killed node again (same id and slots, no data) and wait for a healthy cluster."""
        self._launch(port)
        await self.wait_healthy()

    def describe_exit(self) -> str | None:
        """None while every node runs; else the dead nodes, each with its log's last lines."""
        dead = [p for p in self.ports if self.processes[p].popen.poll() is not None]
        return (
            "\n".join(
                f"Redis Cluster node 127.0.0.1:{p} exited with code"
                f" {self.processes[p].popen.returncode}; last lines of its log:\n"
                f"{tail(self.directory / f'redis-{p}.log') or '(empty)'}"
                for p in dead
            )
            or None
        )

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
