"""`make run` stopped with Ctrl-C while accepted presses are still queued, then started again:
its broker, PostgreSQL and Redis keep their data in the state directory, and every queued press
is issued after the restart; none is settled FAILED."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from app.config import DEV_ENV_FILE
from app.local.processes import free_port
from app.local.servers import postgres_state_dir
from harness import wait_until_blocking
from harness.coupons import coupon_body
from harness.processes import api_ready
from tests.integration.test_second_terminal import dev_env_written

STOCK, PRESSES = 40, 60


def _start_dev(
    cwd: Path, env: dict[str, str], state: Path, consumers: int
) -> subprocess.Popen[str]:
    dev = subprocess.Popen(
        [
            *(sys.executable, "-m", "app.cli", "dev", "--no-autoscale"),
            *("--consumers", str(consumers), "--state-dir", str(state)),
        ],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_blocking(
            lambda: dev_env_written(cwd / DEV_ENV_FILE, dev), 120, "the dev stack to start", 0.2
        )
    except AssertionError:
        dev.kill()
        raise AssertionError(f"dev did not start:\n{dev.communicate()[0][-3000:]}") from None
    wait_until_blocking(
        lambda: api_ready(int(env["COUPON_API_PORT"])), 60, "the dev API to be ready", 0.2
    )
    return dev


def _ctrl_c(dev: subprocess.Popen[str]) -> str:
    dev.send_signal(signal.SIGINT)
    output, _ = dev.communicate(timeout=90)
    assert dev.returncode == 0, output
    return output


def test_presses_queued_at_ctrl_c_are_issued_after_the_next_start(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUPON_")}
    env.update(
        COUPON_DB_SCHEMA=f"t_restart_{tag}",
        COUPON_REDIS_PREFIX=f"t:restart:{tag}",
        COUPON_TOPIC=f"restart-{tag}",
        COUPON_DLQ_TOPIC=f"restart-{tag}.dlq",
        COUPON_CONSUMER_GROUP=f"restart-{tag}",
        COUPON_API_PORT=str(free_port()),
        COUPON_LOG_LEVEL="WARNING",
        COUPON_RECONCILE_INTERVAL_S="1",  # the reconciler looks often: it must release nothing
    )
    base = f"http://127.0.0.1:{env['COUPON_API_PORT']}"
    state = tmp_path / "state"
    dev = _start_dev(tmp_path, env, state, consumers=0)  # nothing consumes: all stay queued
    try:
        created = httpx.post(
            f"{base}/api/coupons",
            json=coupon_body(STOCK, "restart"),
        )
        assert created.status_code == 201, created.text
        coupon = created.json()["id"]
        with httpx.Client(base_url=base, timeout=30) as http:
            answers = [
                http.post(f"/api/coupons/{coupon}/issue/queue", json={"userId": f"u{i}"})
                for i in range(PRESSES)
            ]
        accepted = [f"u{i}" for i, r in enumerate(answers) if r.status_code == 202]
        assert len(accepted) == STOCK
        assert all(r.json()["status"] == "QUEUED" for r in answers if r.status_code == 202)
    finally:
        first = _ctrl_c(dev)
    assert f"keep their data in {state}" in first

    dev = _start_dev(tmp_path, env, state, consumers=1)
    try:
        with httpx.Client(base_url=base, timeout=30) as http:

            def outcome(user: str) -> str:
                r = http.get(f"/api/coupons/{coupon}/issues/{user}", params={"waitSeconds": 10})
                assert r.status_code == 200, r.text
                return str(r.json()["status"])

            def all_decided() -> dict[str, str] | None:
                found = {user: outcome(user) for user in accepted}
                return found if all(s in ("ISSUED", "FAILED") for s in found.values()) else None

            found = wait_until_blocking(all_decided, 120, "every queued press decided", 0.5)
        assert set(found.values()) == {"ISSUED"}, found
        verified = subprocess.run(
            [sys.executable, "-m", "app.cli", "verify"],
            env={k: v for k, v in os.environ.items() if not k.startswith("COUPON_")},
            cwd=tmp_path,  # the second-terminal way: the env file names this stack
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "0 stranded" in verified.stdout or "OK:" in verified.stdout, verified.stdout
    finally:
        _ctrl_c(dev)
        shutil.rmtree(postgres_state_dir(state / "postgresql"), ignore_errors=True)
