"""Throw-away PostgreSQL and Redis servers on loopback, started from the machine's binaries.

`make run` starts them when no server answers (app/local/stack.py), the tests start one of each for
the session (tests/servers.py), the bench through `make run`'s code. Each server has a directory
of its own (data, socket, log), listens on 127.0.0.1 only, and dies with the process that
started it. A server that exits is reported with the last lines of its log (``describe_exit``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from app.local.processes import (
    ManagedProcess,
    absolute,
    detach_and_die_with_parent,
    free_port,
    port_open,
)
from app.unreachable import NotAnswering

# What `make system-deps` installs when a binary is missing (Debian's package names).
POSTGRES_PACKAGE = "postgresql"
REDIS_PACKAGE = "redis-server"


def _install_hint(binary: str, package: str) -> str:
    return f"{binary} is not installed (Debian: apt-get install {package}; `make system-deps`)"


def postgres_binary(name: str) -> str:
    """``initdb`` / ``postgres``: on PATH, or in Debian's versioned directory (not on PATH)."""
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)),
        None,
    )
    if found is None:
        raise NotAnswering(
            "database_url", f"does not answer, and {_install_hint(name, POSTGRES_PACKAGE)}"
        )
    return found


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise NotAnswering(
            "redis_url", f"does not answer, and {_install_hint('redis-server', REDIS_PACKAGE)}"
        )
    return found


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ("" when there is none)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class LocalServer:
    """One server process with its directory and log; ``start``, ``stop``, ``kill``, ``restart``."""

    name: str = "server"
    directory: Path | None = None
    port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None
    _own_directory: bool = False

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def log_path(self) -> Path:
        assert self.directory is not None
        return self.directory / f"{self.name}.log"

    def _command(self) -> Sequence[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Create what the first start needs (a data directory, say)."""

    def _run_as(self) -> tuple[int, int] | None:
        """(uid, gid) to run the server as; None: as this process."""
        return None

    def start(self, timeout: float = 30) -> Self:
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix=f"coupon-{self.name.lower()}-"))
            self._own_directory = True
        # Whatever the caller gave (``--state-dir .local-stack``): the server gets absolute paths.
        self.directory = absolute(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._prepare()
        with self.log_path.open("ab") as log:
            popen = subprocess.Popen(
                list(self._command()),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=detach_and_die_with_parent,
                user=user[0] if (user := self._run_as()) else None,
                group=user[1] if user else None,
            )
        self.process = ManagedProcess(self.name, popen)
        try:
            self._wait_serving(timeout)
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(f"{self.describe_exit() or exc}") from exc
        return self

    def _wait_serving(self, timeout: float) -> None:
        assert self.process is not None
        import time

        deadline = time.monotonic() + timeout
        while True:
            if self.process.popen.poll() is not None:
                raise TimeoutError(f"{self.name} exited at start")
            if port_open(self.host, self.port) and self._ready():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not serve on {self.host}:{self.port}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        """Whether it serves requests once its port is open (start-up work may follow)."""
        return True

    def alive(self) -> bool:
        return self.process is not None and self.process.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            self.process.stop(sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown of its own (a crash)."""
        self.stop(signal.SIGKILL)

    def restart(self, timeout: float = 30) -> Self:
        """Start it again on the same port and directory (after ``stop`` or ``kill``)."""
        self.stop()
        return self.start(timeout)

    def remove(self) -> None:
        """Stop it and delete its directory if this server made it."""
        self.stop()
        if self._own_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def describe_exit(self, lines: int = 20) -> str | None:
        """None while it runs; else which server exited, its code and its log's last lines."""
        if self.process is None or self.process.popen.poll() is None:
            return None
        code = self.process.popen.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return (
            f"{self.name} on {self.host}:{self.port} {how}; last lines of {self.log_path}:\n"
            f"{tail(self.log_path, lines) or '(empty)'}"
        )


def _unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, run it as ``postgres`` (or ``nobody``)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError(
        "running as root and there is no 'postgres' or 'nobody' user to run PostgreSQL as"
    )


def postgres_state_dir(wanted: Path) -> Path:
    """Where a kept PostgreSQL cluster can live, as an absolute path: ``wanted``, unless
    PostgreSQL runs as another user (we are root) who cannot reach it (a parent such as /root is
    not traversable by others); then a directory under the system's temp dir named after
    ``wanted``, so it is the same one on the next run."""
    wanted = absolute(wanted)
    if _unprivileged_user() is None:
        return wanted
    for parent in wanted.resolve().parents:
        if parent.exists() and not os.stat(parent).st_mode & stat.S_IXOTH:
            digest = hashlib.sha256(str(wanted.resolve()).encode()).hexdigest()[:12]
            return Path(tempfile.gettempdir()) / f"coupon-issuer-postgresql-{digest}"
    return wanted


def claim_postgres_state_dir(wanted: Path) -> Path:
    """``postgres_state_dir(wanted)``, made to belong to ``wanted``: where the cluster lives
    elsewhere, ``wanted/MOVED`` says where (for a person looking for it), and a cluster found
    there without that note is from a state directory since deleted (``make clean``, ``rm -rf``):
    it is removed, so a new state directory starts from nothing, as its broker and Redis do."""
    where = postgres_state_dir(wanted)
    wanted = absolute(wanted)
    if where == wanted:
        return where
    note = wanted / "MOVED"
    if not note.exists():
        shutil.rmtree(where, ignore_errors=True)
        wanted.mkdir(parents=True, exist_ok=True)
        note.write_text(
            f"{where}\n# PostgreSQL's user cannot reach this directory: its cluster lives there\n"
        )
    return where


# sun_path holds 108 bytes with the terminating NUL; PostgreSQL refuses to start when it cannot
# create its socket there.
_SOCKET_PATH_MAX = 107


def postgres_socket_dir(directory: Path, port: int) -> str:
    """The server's Unix-socket directory: ``directory`` when the socket's path fits in a
    socket address, else none at all ("": TCP only, which is all the stack uses)."""
    fits = len(os.fsencode(directory / f".s.PGSQL.{port}")) <= _SOCKET_PATH_MAX
    return str(directory) if fits else ""


@dataclass
class PostgresServer(LocalServer):
    """A PostgreSQL cluster of its own (``initdb`` on first start, trust auth, superuser
    ``postgres``). ``durable=False`` turns off fsync: for tests, whose data need not survive
    the machine."""

    name: str = "PostgreSQL"
    durable: bool = True
    max_connections: int = 300

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def data(self) -> Path:
        assert self.directory is not None
        return self.directory / "data"

    def _prepare(self) -> None:
        assert self.directory is not None
        user = _unprivileged_user()
        if user is not None:
            # The server's user must reach its directory: the directory is its own, and every
            # parent is at least traversable.
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            if self.log_path.exists():
                os.chown(self.log_path, user.pw_uid, user.pw_gid)
        if (self.data / "PG_VERSION").exists():
            return
        run_as = self._run_as()
        done = subprocess.run(
            [
                *(postgres_binary("initdb"), "-D", str(self.data), "-A", "trust"),
                *("-U", "postgres", "-E", "UTF8", "--no-instructions"),
            ],
            capture_output=True,
            text=True,
            user=run_as[0] if run_as else None,
            group=run_as[1] if run_as else None,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def _ready(self) -> bool:
        # The port opens before recovery ends ("the database system is starting up").
        isready = postgres_binary("pg_isready")
        probe = [isready, "-q", "-h", self.host, "-p", str(self.port), "-U", "postgres"]
        return subprocess.run(probe, check=False, timeout=10).returncode == 0

    def _run_as(self) -> tuple[int, int] | None:
        user = _unprivileged_user()
        return None if user is None else (user.pw_uid, user.pw_gid)

    def _command(self) -> Sequence[str]:
        assert self.directory is not None
        args = [
            postgres_binary("postgres"),
            *("-D", str(self.data), "-p", str(self.port), "-h", self.host),
            *("-k", postgres_socket_dir(self.directory, self.port)),
            *("-c", f"max_connections={self.max_connections}"),
        ]
        if not self.durable:
            args += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        return args


@dataclass
class RedisServer(LocalServer):
    """A redis-server; without ``durable`` a restart is also a flush (the gate rebuilds), with it
    an append-only file in its directory keeps the gate across restarts (fsync every second)."""

    name: str = "Redis"
    durable: bool = False

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _command(self) -> Sequence[str]:
        assert self.directory is not None
        return [
            redis_binary(),
            *("--port", str(self.port), "--bind", self.host),
            *("--save", "", "--daemonize", "no"),
            *(("--appendonly", "yes", "--appendfsync", "everysec") if self.durable else ()),
            *(() if self.durable else ("--appendonly", "no")),
            *("--dir", str(self.directory)),
        ]
