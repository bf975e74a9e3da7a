"""`make run` stops its whole stack however it is told to: SIGTERM to make (a process manager, an
IDE's stop button, `timeout make run`) and a hang-up (the terminal closed), not only Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from app.config import DEV_ENV_FILE
from app.local.processes import free_port
from harness import wait_until_blocking
from harness.processes import api_ready
from tests.servers import database_url, redis_url

ROOT = Path(__file__).resolve().parents[2]
# What make run reads, linked into a directory of the test's own: the stack's env file is written
# there, not into a checkout a developer's own `make run` may be using.
_LINKED = ("Makefile", "mk", ".venv", ".tools", "pyproject.toml", "requirements.lock")


def _processes_in(directory: Path) -> list[int]:
    """Processes whose working directory is ``directory`` (the stack's all are)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == directory:
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return found


@pytest.mark.parametrize("how", ["SIGTERM to make", "hang-up of the terminal"])
def test_make_run_stops_everything_it_started(
    how: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    for name in _LINKED:
        (tmp_path / name).symlink_to(ROOT / name)
    tag = uuid.uuid4().hex[:8]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    env = {k: v for k, v in env.items() if not k.startswith("COUPON_")}
    env.update(
        {  # the session's servers: make run starts the API and a consumer, no servers of its own
            "COUPON_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "COUPON_DATABASE_URL": database_url(),
            "COUPON_REDIS_URL": redis_url(),
            "COUPON_DB_SCHEMA": f"t_run_{tag}",
            "COUPON_REDIS_PREFIX": f"t:run:{tag}",
            "COUPON_TOPIC": f"run-{tag}",
            "COUPON_DLQ_TOPIC": f"run-{tag}.dlq",
            "COUPON_CONSUMER_GROUP": f"run-{tag}",
            "COUPON_API_PORT": str(port),
            "COUPON_LOG_LEVEL": "WARNING",
        }
    )
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal's process group of its own, as a shell gives it
    )
    env_file = tmp_path / DEV_ENV_FILE
    try:
        wait_until_blocking(
            lambda: make.poll() is None and env_file.exists() and api_ready(port),
            120,
            "make run's API and its env file",
            0.2,
        )
        if how == "SIGTERM to make":
            make.send_signal(signal.SIGTERM)  # make alone: it passes the signal to its recipe
        else:
            os.killpg(make.pid, signal.SIGHUP)  # the terminal's foreground group
        output, _ = make.communicate(timeout=60)
        wait_until_blocking(
            lambda: not _processes_in(tmp_path), 60, "every process make run started to end", 0.2
        )
    finally:
        for pid in _processes_in(tmp_path):  # only if the test failed: leave nothing behind
            os.kill(pid, signal.SIGKILL)
        if make.poll() is None:
            make.kill()
            make.communicate()
    assert not api_ready(port)
    assert not env_file.exists(), output  # removed: the stack stopped, not just died
