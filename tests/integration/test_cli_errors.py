"""Every command answers a dependency that does not answer with one line naming what it tried and
the setting that changes it: exit code 2, no traceback, no asyncio noise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from app.adapters import postgres_setup
from app.adapters.kafka import running
from app.config import Settings
from app.local.processes import free_port
from app.unreachable import diagnose
from tests.servers import database_url, redis_url

CLOSED = free_port()  # nothing listens here
NOISE = ("Traceback", "Unclosed", "Task exception", "never retrieved")


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COUPON_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={
            **clean,
            "COUPON_DB_SCHEMA": "t_cli_errors",
            "COUPON_DATABASE_URL": database_url(),
            "COUPON_REDIS_URL": redis_url(),
            **env,
        },
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ["dlq", "list"],
            {"COUPON_KAFKA_BOOTSTRAP": f"127.0.0.1:{CLOSED}"},
            f"cannot reach Kafka at 127.0.0.1:{CLOSED} (from the environment;"
            " set COUPON_KAFKA_BOOTSTRAP to change it)",
        ),
        (
            ["dlq", "replay"],
            {"COUPON_KAFKA_BOOTSTRAP": f"127.0.0.1:{CLOSED}"},
            "set COUPON_KAFKA_BOOTSTRAP",
        ),
        (
            ["topics"],
            {"COUPON_KAFKA_BOOTSTRAP": f"127.0.0.1:{CLOSED}"},
            f"cannot reach Kafka at 127.0.0.1:{CLOSED}",
        ),
        (
            ["migrate"],
            {"COUPON_DATABASE_URL": f"postgresql://me:pw@127.0.0.1:{CLOSED}/coupons"},
            f"cannot reach PostgreSQL at postgresql://me:***@127.0.0.1:{CLOSED}/coupons",
        ),
        (
            ["verify"],
            {"COUPON_DATABASE_URL": f"postgresql://127.0.0.1:{CLOSED}/coupons"},
            "set COUPON_DATABASE_URL to change it): Connection refused",
        ),
        (
            ["api"],
            {"COUPON_DATABASE_URL": f"postgresql://127.0.0.1:{CLOSED}/coupons"},
            "cannot reach PostgreSQL",
        ),
        (
            # a long-running process: the database answers, the broker does not
            ["consumer"],
            {
                "COUPON_KAFKA_BOOTSTRAP": f"127.0.0.1:{CLOSED}",
                "COUPON_CONSUMER_METRICS_PORT": str(free_port()),
                "COUPON_DB_SCHEMA": "public",  # a schema that exists: the broker is the fault
            },
            "cannot reach Kafka",
        ),
        (
            # the database answers but the schema was never migrated
            ["consumer"],
            {"COUPON_CONSUMER_METRICS_PORT": str(free_port())},
            "schema 't_cli_errors' (COUPON_DB_SCHEMA) does not exist: run coupon-issuer migrate",
        ),
        (
            # make run told to use a Redis that is not there (it stops the broker it started)
            ["dev", "--no-autoscale"],
            {"COUPON_REDIS_URL": f"redis://127.0.0.1:{CLOSED}/0"},
            f"cannot reach Redis at redis://127.0.0.1:{CLOSED}/0 (from the environment;",
        ),
    ],
    ids=[
        "dlq-list",
        "dlq-replay",
        "topics",
        "migrate",
        "verify",
        "api",
        "consumer",
        "consumer-unmigrated",
        "dev",
    ],
)
def test_one_line_exit_2(
    args: list[str], env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    done = run_cli(args, env, tmp_path)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], done.stderr
    if args[0] not in (
        "consumer",
        "dev",
    ):  # a service keeps its client libraries' logs; the others say one line
        assert done.stderr.strip() == errors[0]
    assert not any(word in done.stderr for word in NOISE), done.stderr
    assert "pw@" not in done.stderr


async def test_real_client_failures_are_attributed_to_their_system() -> None:
    """The bare socket errors each client library raises (asyncpg's typed where we connect), not
    just their own exception types."""
    settings = Settings(
        _env_file=None,
        kafka_bootstrap=f"127.0.0.1:{CLOSED}",
        redis_url=f"redis://127.0.0.1:{CLOSED}/0",
        database_url=f"postgresql://127.0.0.1:{CLOSED}/coupons",
    )
    failures: dict[str, BaseException] = {}
    try:
        await postgres_setup.connect(settings.database_url, timeout_s=5)
    except Exception as exc:
        failures["PostgreSQL"] = exc
    client = aioredis.from_url(settings.redis_url)
    try:
        await client.ping()
    except Exception as exc:
        failures["Redis"] = exc
    finally:
        await client.aclose()
    try:
        async with running(AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)):
            pass
    except Exception as exc:
        failures["Kafka"] = exc
    assert set(failures) == {"PostgreSQL", "Redis", "Kafka"}
    for system, fault in failures.items():
        problem = diagnose(fault, settings)
        assert problem is not None and problem.system == system, (system, fault)
        assert f":{CLOSED}" in problem.address
