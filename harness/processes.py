"""Isolated settings and the real processes of one deployment: an API and N consumers."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.local.processes import ManagedProcess, free_port
from app.local.stack import child_env, spawn
from harness.wait import wait_until


def isolated(base: Settings, label: str, **overrides: Any) -> Settings:
    """``base`` with names no other run shares: own schema, Redis prefix, topics, group and ports.

    The names start with ``label`` (say ``t`` or ``bench_sale``); ``overrides`` win over them and
    are validated like the environment would be (a token becomes a SecretStr).
    """
    tag = f"{label}_{uuid.uuid4().hex[:10]}"
    values: dict[str, Any] = {
        **base.model_dump(),
        "db_schema": tag,
        "redis_prefix": tag.replace("_", ":"),
        "topic": tag,
        "dlq_topic": f"{tag}.dlq",
        "consumer_group": tag,
        "api_host": "127.0.0.1",
        "api_port": free_port(),
        "consumer_metrics_port": free_port(),
        "log_level": "WARNING",
        **overrides,
    }
    return type(base)(**values)


def api_ready(port: int) -> bool:
    """Whether an API on 127.0.0.1:``port`` answers ``/readyz`` with 200 (its Redis and broker up)."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def scrape(text: str) -> dict[str, float]:
    """Flatten an exposition into {'name{label="v",...}': value}."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


@dataclass
class ServiceProcesses:
    """An API and consumers started with ``settings`` (``coupon-issuer api`` / ``consumer``
    through app.local.stack's ``spawn``), each logging to ``log_dir/<name>.log``."""

    settings: Settings
    log_dir: Path
    api: ManagedProcess | None = None
    consumers: list[ManagedProcess] = field(default_factory=list)
    lag_exporter: ManagedProcess | None = None
    consumer_ports: list[int] = field(default_factory=list)
    process_env: dict[str, str] = field(default_factory=dict)  # extra env of every process
    consumer_env: dict[str, str] = field(default_factory=dict)  # extra env of the consumers only
    # None: every setting is exported. Processes of another revision of the code keep its
    # defaults: only the settings off ours, and these, are exported (app.local.stack.child_env).
    keep: tuple[str, ...] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def _spawn(self, name: str, args: list[str], extra: Mapping[str, str]) -> ManagedProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = child_env(self.settings, {**self.process_env, **extra}, self.keep)
        return spawn(name, args, env, self.log_dir / f"{name}.log")

    def start_api(self, extra_env: Mapping[str, str] | None = None) -> ManagedProcess:
        self.api = self._spawn("api", ["api"], extra_env or {})
        return self.api

    def add_consumer(self, extra_env: Mapping[str, str] | None = None) -> ManagedProcess:
        """Start one more consumer, with its own metrics port."""
        port = free_port()
        env = {**self.consumer_env, **(extra_env or {}), "COUPON_CONSUMER_METRICS_PORT": str(port)}
        proc = self._spawn(f"consumer-{len(self.consumers)}", ["consumer"], env)
        self.consumers.append(proc)
        self.consumer_ports.append(port)
        return proc

    def start_lag_exporter(self, extra_env: Mapping[str, str] | None = None) -> ManagedProcess:
        """``coupon-issuer lag-exporter`` (the exporter and the reconciler, as the chart runs
        them), on a port of its own."""
        env = {"COUPON_LAG_EXPORTER_PORT": str(free_port()), **(extra_env or {})}
        self.lag_exporter = self._spawn("lag-exporter", ["lag-exporter"], env)
        return self.lag_exporter

    def live_consumers(self) -> list[int]:
        """Indexes of the consumers still running."""
        return [i for i, p in enumerate(self.consumers) if p.popen.poll() is None]

    async def consumer_metrics(self, index: int) -> dict[str, float] | None:
        """Consumer ``index``'s /metrics, flattened (see ``scrape``); None if it does not answer."""
        url = f"http://127.0.0.1:{self.consumer_ports[index]}/metrics"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
                http.get(url) as r,
            ):
                return scrape(await r.text())
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def wait_api_ready(self, timeout: float = 60) -> None:
        """Wait until the API answers /readyz with 200; fails at once if it exited."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

            async def ready() -> bool:
                if self.api is not None and self.api.popen.poll() is not None:
                    raise RuntimeError(f"the API exited with {self.api.popen.returncode}")
                try:
                    async with http.get(f"{self.base_url}/readyz") as r:
                        return r.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    return False

            await wait_until(ready, timeout, "the API to be ready")

    async def wait_for_assignment(
        self, expected_members: int | None = None, timeout: float = 60
    ) -> None:
        """Wait until the live consumers own every partition between them, each at least one.

        ``expected_members``: how many live consumers that takes; by default every consumer
        started, and one that exits fails the wait at once.
        """
        partitions = self.settings.partitions

        async def balanced() -> bool:
            if expected_members is None:
                for proc in self.consumers:
                    if proc.popen.poll() is not None:
                        raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}")
            owned = []
            for i in self.live_consumers():
                m = await self.consumer_metrics(i)
                owned.append(int(m.get("coupon_consumer_assigned_partitions", 0)) if m else 0)
            members = len(self.consumers) if expected_members is None else expected_members
            return len(owned) == members and sum(owned) == partitions and min(owned) >= 1

        members = "every" if expected_members is None else str(expected_members)
        await wait_until(balanced, timeout, f"{members} consumers to share the partitions")

    def terminate(self) -> None:
        """Stop consumers first (they finish their batch, commit and leave), then the API, then
        the lag exporter."""
        for proc in self.consumers:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.consumers:
            proc.stop()
        if self.api:
            self.api.stop()
        if self.lag_exporter:
            self.lag_exporter.stop()
