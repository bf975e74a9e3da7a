"""Which dependency a failure names, and the one line a command prints for it."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, RedisClusterException

from app.config import Settings
from app.unreachable import NotAnswering, diagnose, redact

SETTINGS = Settings(
    _env_file=None,
    kafka_bootstrap="127.0.0.1:1",
    redis_url="redis://127.0.0.1:2/0",
    database_url="postgresql://app:s3cret@db.internal:6432/coupons",
)


def test_kafka() -> None:
    problem = diagnose(KafkaConnectionError("Unable to bootstrap from [...]"), SETTINGS)
    assert problem is not None
    assert str(problem).startswith("cannot reach Kafka at 127.0.0.1:1 (")
    assert "set COUPON_KAFKA_BOOTSTRAP to change it" in str(problem)
    assert "\n" not in str(problem)


def test_redis() -> None:
    problem = diagnose(RedisConnectionError("Error 111 connecting to 127.0.0.1:2."), SETTINGS)
    assert problem is not None and problem.setting == "COUPON_REDIS_URL"
    assert problem.address == "redis://127.0.0.1:2/0"


def test_a_redis_cluster_without_cluster_mode_says_which_setting() -> None:
    problem = diagnose(MovedError("7638 127.0.0.1:17002"), SETTINGS)
    assert problem is not None and "is a Redis Cluster; set COUPON_REDIS_CLUSTER=true" in str(
        problem
    )
    refused = RedisClusterException(
        "Redis Cluster cannot be connected: Cluster mode is not enabled"
    )
    problem = diagnose(refused, SETTINGS)
    assert problem is not None and problem.setting == "COUPON_REDIS_URL"
    assert "Cluster mode is not enabled" in problem.detail


def test_postgres_login_failures_name_the_dsn_without_its_password() -> None:
    problem = diagnose(
        asyncpg.InvalidCatalogNameError('database "coupons" does not exist'), SETTINGS
    )
    assert problem is not None and problem.setting == "COUPON_DATABASE_URL"
    assert "s3cret" not in str(problem) and "app:***@db.internal" in str(problem)
    assert 'database "coupons" does not exist' in str(problem)


def test_a_missing_table_says_run_migrate() -> None:
    problem = diagnose(asyncpg.UndefinedTableError('relation "coupons" does not exist'), SETTINGS)
    assert problem is not None and "coupon-issuer migrate" in str(problem)
    assert not str(problem).startswith("cannot reach")


def test_found_through_causes_and_exception_groups() -> None:
    try:
        try:
            raise KafkaConnectionError("down")
        except KafkaConnectionError as exc:
            raise RuntimeError("broker unreachable after 30 attempts") from exc
    except RuntimeError as wrapped:
        group = ExceptionGroup("tasks", [ValueError("other"), wrapped])
    problem = diagnose(group, SETTINGS)
    assert problem is not None and problem.system == "Kafka"


@pytest.mark.parametrize("exc", [ValueError("bug"), KeyError("x"), OSError("disk full")])
def test_other_faults_are_not_blamed_on_a_dependency(exc: Exception) -> None:
    assert diagnose(exc, SETTINGS) is None


def test_origin_says_where_the_value_came_from() -> None:
    problem = diagnose(KafkaConnectionError(), Settings(_env_file=None))
    assert problem is not None and problem.origin == "the default"


def test_redact() -> None:
    assert redact("postgresql://u:p@h/db") == "postgresql://u:***@h/db"
    assert redact("redis://h:7000/0") == "redis://h:7000/0"


def test_our_own_checks_name_their_setting() -> None:
    problem = diagnose(NotAnswering("database_url"), SETTINGS)
    assert problem is not None and problem.system == "PostgreSQL"
    assert problem.setting == "COUPON_DATABASE_URL" and problem.detail == "does not answer"
