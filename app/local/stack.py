"""The embedded local stack: `make run` and the tests start their real parts from here.

Kafka is Apache Kafka (one KRaft node from the jars `make kafka` fetched) on loopback; Redis and
PostgreSQL are the ones on 127.0.0.1 when they answer, otherwise throw-away servers started from
the machine's binaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from urllib.parse import urlparse

from app.adapters.kafka_lag import ReconnectingLagReader
from app.autoscaling.policy import ScalingSpec
from app.config import DEV_ENV_FILE, Settings
from app.local.dev_env import announced, dev_environment
from app.local.kafka import KafkaNode
from app.local.processes import (
    ManagedProcess,
    detach_and_die_with_parent,
    free_port,
    port_open,
    preferred_port,
)
from app.local.scaler import LocalScaler
from app.local.servers import LocalServer, PostgresServer, RedisServer, claim_postgres_state_dir
from app.processes.lifecycle import stop_event_on_signals
from app.reconciler.reconcile import reconcile_until
from app.unreachable import NotAnswering
from app.waits import until_set

log = logging.getLogger(__name__)


def _answers(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    return port_open(parsed.hostname or "127.0.0.1", parsed.port or default_port)


def child_env(
    settings: Settings,
    overrides: Mapping[str, str] | None = None,
    keep: Collection[str] | None = None,
) -> dict[str, str]:
    """The environment for a child process: ours plus every setting as COUPON_*.

    With ``keep`` (setting names), a setting at this code's default is left out unless named
    there: a child running another revision of the code then keeps that revision's defaults."""
    env = dict(os.environ)
    values = settings.model_dump(exclude_defaults=keep is not None)
    for name in keep or ():
        values[name] = getattr(settings, name)
    for name, value in values.items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"COUPON_{name.upper()}"] = str(value)
    env.update(overrides or {})
    return env


def spawn(
    name: str, args: list[str], env: Mapping[str, str], log_file: Path | None = None
) -> ManagedProcess:
    """Start ``coupon-issuer <args>`` with this interpreter (output to ``log_file`` if given)."""
    out = log_file.open("ab") if log_file else None
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            preexec_fn=detach_and_die_with_parent,
        )
    finally:
        if out:
            out.close()
    return ManagedProcess(name, popen)


@contextlib.contextmanager
def local_systems(
    settings: Settings,
    *,
    default_ports: bool = False,
    state_dir: Path | None = None,
    durable: bool | None = None,
) -> Iterator[tuple[Settings, list[ManagedProcess]]]:
    """Resolve broker, Redis and PostgreSQL: configured ones, local ones, or embedded ones.

    With ``default_ports`` (``make run``) what it starts takes the usual ports (9092, 6379, 5432)
    when they are free, so commands in a second terminal find it with the default settings.
    With ``state_dir`` (``make run`` again) what it starts keeps its data there between runs: the
    broker's log dirs, PostgreSQL's cluster and Redis's append-only file, so presses still queued
    at Ctrl-C are issued after the next start. Without it, everything is thrown away at the end.

    ``durable`` (default: whether there is a ``state_dir``): PostgreSQL with fsync and
    synchronous commits, Redis with its append-only file fsynced every second, as a deployment
    runs them. Off, the tests' servers skip the disk's flushes. The bench keeps nothing, yet
    measures what a sale costs with them on.
    """
    given = settings.model_fields_set
    started: list[ManagedProcess] = []
    servers: list[LocalServer] = []
    kafka_dirs: list[Path] = []
    updates: dict[str, object] = {}

    def port(default: int) -> int:
        return preferred_port(default) if default_ports else free_port()

    flushed = state_dir is not None if durable is None else durable

    def kept(name: str) -> Path | None:
        return None if state_dir is None else state_dir / name

    def serve(server: PostgresServer | RedisServer) -> str:
        servers.append(server)
        server.start()
        assert server.process is not None
        started.append(server.process)
        return server.url

    try:
        if "kafka_bootstrap" not in given:
            if state_dir is None:
                kafka_dir = Path(tempfile.mkdtemp(prefix="coupon-kafka-"))
                kafka_dirs.append(kafka_dir)
            else:
                kafka_dir = state_dir / "kafka"
            broker = KafkaNode(kafka_dir, port=port(9092))
            broker.start()
            assert broker.process is not None
            started.append(broker.process)
            updates["kafka_bootstrap"] = broker.bootstrap
        if not _answers(settings.redis_url, 6379):
            if "redis_url" in given:
                raise NotAnswering("redis_url")
            updates["redis_url"] = serve(
                RedisServer(port=port(6379), directory=kept("redis"), durable=flushed)
            )
        if not _answers(settings.database_url, 5432):
            if "database_url" in given:
                raise NotAnswering("database_url")
            where = kept("postgresql")
            where = None if where is None else claim_postgres_state_dir(where)
            updates["database_url"] = serve(
                PostgresServer(port=port(5432), directory=where, durable=flushed)
            )
        yield settings.model_copy(update=updates), started
    finally:
        for proc in reversed(started):
            proc.stop()
        for server in servers:
            server.remove()  # deletes only a directory it made itself: a state dir stays
        for directory in kafka_dirs:
            shutil.rmtree(directory, ignore_errors=True)


def prepare(settings: Settings) -> None:
    """Migrate the database and create the topics (what a deployment's pre-install job does)."""
    from app.adapters.kafka import ensure_topics, wanted_topics
    from app.adapters.postgres_setup import apply_migrations

    async def run() -> None:
        await apply_migrations(settings.database_url, settings.db_schema)
        await ensure_topics(settings.kafka_bootstrap, wanted_topics(settings))

    asyncio.run(run())


class ConsumerProcesses:
    """Consumer processes of the local stack; the autoscaler's actuator (see autoscaling/local)."""

    def __init__(self, env: Mapping[str, str], log_dir: Path | None = None):
        self._env = env
        self._log_dir = log_dir
        self.running: list[ManagedProcess] = []
        self._draining: list[ManagedProcess] = []
        self._started = 0

    def count(self) -> int:
        self.reap()
        return len(self.running)

    def scale_to(self, n: int) -> None:
        """Start consumers, or SIGTERM the newest ones (they finish their batch and leave)."""
        while len(self.running) < n:
            index = self._started
            self._started += 1
            env = {**self._env, "COUPON_CONSUMER_METRICS_PORT": str(free_port())}
            log_file = self._log_dir / f"consumer-{index}.log" if self._log_dir else None
            self.running.append(spawn(f"consumer-{index}", ["consumer"], env, log_file))
        while len(self.running) > n:
            victim = self.running.pop()
            victim.popen.send_signal(signal.SIGTERM)
            self._draining.append(victim)

    def reap(self) -> list[ManagedProcess]:
        """Forget finished processes; returns consumers that died without being asked to."""
        self._draining = [p for p in self._draining if p.popen.poll() is None]
        died = [p for p in self.running if p.popen.poll() is not None]
        self.running = [p for p in self.running if p.popen.poll() is None]
        return died

    def stop_all(self) -> None:
        for proc in [*self.running, *self._draining]:
            proc.stop()
        self.running, self._draining = [], []


def dev_scaling_spec(settings: Settings) -> ScalingSpec:
    """Local defaults: react within seconds, never below one consumer so presses are processed."""
    return ScalingSpec(
        min_replicas=1,
        max_replicas=settings.partitions,
        target_drain_seconds=5,
        lag_per_replica=500,
        poll_seconds=1,
        scale_down_stabilization_seconds=10,
    )


def run_dev(
    settings: Settings, *, autoscale: bool, consumers: int, state_dir: Path | None = None
) -> int:
    """Start everything, print where it is, and stop all of it on Ctrl-C / SIGTERM; with
    ``state_dir`` the servers it starts keep their data there for the next run."""
    settings = settings.model_copy(update=dev_listen(settings))
    with local_systems(settings, default_ports=True, state_dir=state_dir) as (resolved, _started):
        prepare(resolved)
        with announced(resolved, Path.cwd() / DEV_ENV_FILE):
            return asyncio.run(_serve_dev(resolved, autoscale, consumers, state_dir))


def dev_listen(settings: Settings) -> dict[str, object]:
    """The local stack listens on loopback only (admin endpoints included) unless told otherwise,
    and on the usual API port unless that is taken."""
    given = settings.model_fields_set
    updates: dict[str, object] = {}
    if "api_host" not in given:
        updates["api_host"] = "127.0.0.1"
    if "api_port" not in given:
        updates["api_port"] = preferred_port(settings.api_port)
    return updates


async def _serve_dev(
    settings: Settings, autoscale: bool, consumers: int, state_dir: Path | None = None
) -> int:
    # SIGHUP too: a closed terminal stops the stack as Ctrl-C does (the servers in order, the
    # second terminal's env file removed), not by this process dying under its children.
    stop = stop_event_on_signals(signal.SIGHUP)
    env = child_env(settings)
    api = spawn("api", ["api"], env)
    pool = ConsumerProcesses(env)
    scaler_task: asyncio.Task[None] | None = None
    lag = ReconnectingLagReader(settings.kafka_bootstrap)  # connects on the first read
    # The local stack settles stranded reservations too (the chart runs this in the lag exporter).
    reconciling = asyncio.create_task(
        reconcile_until(settings, stop, settings.reconcile_interval_s)
    )
    try:
        pool.scale_to(max(1, min(consumers, settings.partitions)))
        await asyncio.to_thread(_wait_for_api, api, settings.api_port)
        _print_banner(settings, pool.count(), autoscale, state_dir)
        if autoscale:
            read = functools.partial(lag.read, settings.topic, settings.consumer_group)
            scaler = LocalScaler(read, pool, dev_scaling_spec(settings))
            scaler_task = asyncio.create_task(scaler.run(stop))
        while not stop.is_set() and api.popen.poll() is None:
            for dead in pool.reap():
                log.warning(
                    "%s exited with %s; starting a replacement", dead.name, dead.popen.returncode
                )
                pool.scale_to(pool.count() + 1)
            await until_set(stop, 0.5)
    finally:
        stop.set()
        await reconciling
        if scaler_task:
            await scaler_task
        await lag.close()
        await asyncio.to_thread(pool.stop_all)  # consumers first: they commit and leave the group
        await asyncio.to_thread(api.stop)
    return 0


def _wait_for_api(api: ManagedProcess, port: int) -> None:
    deadline = time.monotonic() + 60
    while not port_open("127.0.0.1", port):
        if api.popen.poll() is not None:
            raise RuntimeError(
                f"the API exited with code {api.popen.returncode}; see its log above"
            )
        if time.monotonic() > deadline:
            raise TimeoutError("the API did not start within 60s")
        time.sleep(0.1)


def _print_banner(
    settings: Settings, consumers: int, autoscale: bool, state_dir: Path | None = None
) -> None:
    exports = " ".join(f"{k}={v}" for k, v in dev_environment(settings).items())
    print(
        f"\ncoupon-issuer is up\n"
        f"  API        http://127.0.0.1:{settings.api_port}  (listening on {settings.api_host};"
        " docs: /docs, metrics: /metrics)\n"
        f"  Kafka      {settings.kafka_bootstrap}  topic {settings.topic}"
        f" ({settings.partitions} partitions)\n"
        f"  Redis      {settings.redis_url}\n"
        f"  PostgreSQL {settings.database_url}  schema {settings.db_schema}\n"
        f"  consumers  {consumers} (autoscale {'on' if autoscale else 'off'})\n"
        f"Commands run in {Path.cwd()} or below it find this stack (it is in {DEV_ENV_FILE});"
        " from elsewhere:\n"
        f"  export {exports}\n"
        f"Ctrl-C stops everything."
        + (
            f" The servers it started keep their data in {state_dir} for the next run"
            " (make run FRESH=1 starts from nothing).\n"
            if state_dir is not None
            else " The servers it started are thrown away.\n"
        ),
        flush=True,
    )
