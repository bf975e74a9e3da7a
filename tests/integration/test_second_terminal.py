"""`make run` in one terminal, `coupon-issuer ...` in a second one: the commands find the local
stack without any setting, and the stack listens on loopback only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from app.config import DEV_ENV_FILE
from app.local.processes import free_port
from harness import wait_until_blocking
from harness.coupons import coupon_body
from harness.processes import api_ready


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


def dev_env_written(path: Path, proc: subprocess.Popen[str]) -> str:
    """The dev stack's env file once it names the broker ("" until then); fails if dev exited."""
    assert proc.poll() is None, f"dev exited with {proc.returncode}"
    if path.exists() and "COUPON_KAFKA_BOOTSTRAP" in (text := path.read_text()):
        return text
    return ""


def test_second_terminal_finds_the_dev_stack(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COUPON_")}
    # Names of our own so the shared PostgreSQL/Redis of this machine are not disturbed; the
    # broker and the API address are left to the dev stack, as on a developer's machine.
    isolated = {
        "COUPON_DB_SCHEMA": f"t_dev_{tag}",
        "COUPON_REDIS_PREFIX": f"t:dev:{tag}",
        "COUPON_TOPIC": f"dev-{tag}",
        "COUPON_DLQ_TOPIC": f"dev-{tag}.dlq",
        "COUPON_CONSUMER_GROUP": f"dev-{tag}",
        "COUPON_API_PORT": str(free_port()),
        "COUPON_LOG_LEVEL": "WARNING",
    }
    dev = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev", "--no-autoscale"],
        env={**clean, **isolated},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        env_file = tmp_path / DEV_ENV_FILE
        written = wait_until_blocking(
            lambda: dev_env_written(env_file, dev), 90, f"{env_file} to name the broker", 0.2
        )
        settings = dict(line.split("=", 1) for line in written.splitlines() if "=" in line)
        assert settings["COUPON_DB_SCHEMA"] == isolated["COUPON_DB_SCHEMA"]
        assert "COUPON_API_HOST" not in settings  # the CLI does not need it
        port = int(isolated["COUPON_API_PORT"])
        wait_until_blocking(lambda: api_ready(port), 60, "the dev API to be ready", 0.2)
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only, not 0.0.0.0
        created = httpx.post(
            f"http://127.0.0.1:{port}/api/coupons",
            json=coupon_body(1, "second terminal"),
        )
        assert created.status_code == 201, created.text

        def second_terminal(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "app.cli", *args],
                env=clean,  # no COUPON_* at all: what a new terminal has
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=120,
            )

        listed = second_terminal("dlq", "list")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.strip().endswith("0 dead letter(s)")
        verified = second_terminal("verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.strip().splitlines()[-1].startswith("OK: 1 coupon(s)")
        assert created.json()["id"] in verified.stdout  # it read this stack's schema
        assert "could not be read" not in verified.stdout
        # A terminal in a subdirectory of the checkout finds the stack too (as git finds .git).
        below = tmp_path / "charts" / "coupon-issuer"
        below.mkdir(parents=True)
        from_below = second_terminal("verify", cwd=below)
        assert from_below.returncode == 0, from_below.stdout + from_below.stderr
        assert created.json()["id"] in from_below.stdout
    finally:
        dev.send_signal(signal.SIGINT)
        output, _ = dev.communicate(timeout=60)
    assert dev.returncode == 0, output
    assert f"export COUPON_KAFKA_BOOTSTRAP={settings['COUPON_KAFKA_BOOTSTRAP']}" in output
    assert not (tmp_path / DEV_ENV_FILE).exists()
