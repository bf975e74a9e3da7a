"""Whatever state directory a user names (relative, with a trailing slash, with spaces, deep),
every server of the local stack gets absolute paths and starts in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.local.kafka import KafkaNode
from app.local.processes import absolute
from app.local.servers import PostgresServer, RedisServer, postgres_socket_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory every user can traverse (PostgreSQL runs as its own user as root)."""
    directory = Path(tempfile.mkdtemp(prefix="coupon-paths-", dir="/tmp"))
    directory.chmod(0o755)
    monkeypatch.chdir(directory)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_a_state_dir_is_made_absolute_as_the_user_wrote_it(workdir: Path) -> None:
    assert absolute("my state/") == workdir / "my state"
    assert absolute("./a/../b") == workdir / "b"
    assert absolute("/srv/x/") == Path("/srv/x")
    assert absolute("~/x") == Path.home() / "x"


def test_servers_start_in_a_relative_state_dir_with_spaces(workdir: Path) -> None:
    state = Path("my state/")
    postgres = PostgresServer(directory=state / "postgresql", durable=False)
    redis = RedisServer(directory=state / "redis", durable=True)
    broker = KafkaNode(state / "kafka")
    try:
        for server, name in ((postgres, "postgresql"), (redis, "redis")):
            server.start()
            assert server.directory == workdir / "my state" / name
        broker.start()
        assert broker.directory == workdir / "my state" / "kafka"
        assert (workdir / "my state" / "kafka" / "data" / "meta.properties").exists()
        assert (workdir / "my state" / "redis" / "appendonlydir").is_dir()
        assert postgres.directory is not None
        assert (postgres.directory / f".s.PGSQL.{postgres.port}").is_socket()
    finally:
        broker.stop()
        postgres.stop()
        redis.stop()


def test_postgres_starts_where_its_socket_path_would_be_too_long(workdir: Path) -> None:
    deep = workdir / ("a-long-checkout-path-" * 5) / ".local-stack" / "postgresql"
    assert postgres_socket_dir(deep, 5432) == ""  # over sun_path: TCP only
    assert postgres_socket_dir(workdir, 5432) == str(workdir)
    server = PostgresServer(directory=deep, durable=False)
    try:
        server.start()  # answers on TCP, which is all the stack uses
    finally:
        server.stop()


def test_make_run_hands_the_state_dir_over_as_one_argument() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    shown = subprocess.run(
        ["make", "-n", "--no-print-directory", "run", "STATE_DIR=my state/", "FRESH=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'dev --state-dir "my state/" --fresh' in shown, shown
