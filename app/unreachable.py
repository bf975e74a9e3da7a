"""A command whose dependency does not answer says so in one line: which system, at which address,
and which setting changes it, instead of a library's traceback.

``diagnose`` reads the failure's type (asyncpg's bare socket errors are typed where we connect,
``postgres_setup.DatabaseUnreachable``) and maps it to the setting that names the address; ``app.cli.main`` prints the line and exits
with 2, for every subcommand.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka.errors import KafkaConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.adapters.postgres_setup import DatabaseUnreachable, SchemaMismatch
from app.config import Settings, setting_origin

# client library (top-level module) -> (system, the setting holding its address)
_SYSTEMS: dict[str, tuple[str, str]] = {
    "aiokafka": ("Kafka", "kafka_bootstrap"),
    "redis": ("Redis", "redis_url"),
    "asyncpg": ("PostgreSQL", "database_url"),
}
_SYSTEMS_BY_FIELD = {field: system for system, field in _SYSTEMS.values()}
# asyncpg errors that mean "connected, but could not log in to that database"
_PG_CONNECT_ERRORS = (
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
# what PostgreSQL failing to answer, or to be set up, raises where we connect
_PG_ERRORS = (DatabaseUnreachable, *_PG_CONNECT_ERRORS, asyncpg.UndefinedTableError, SchemaMismatch)
_DETAIL_MAX = 160


class NotAnswering(ConnectionError):
    """Raised by our own checks: the system behind ``field`` (a Settings field) does not answer."""

    def __init__(self, field: str, detail: str = "does not answer") -> None:
        super().__init__(f"{_SYSTEMS_BY_FIELD[field]} {detail}")
        self.field = field
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DependencyProblem:
    """What to tell the user: ``cannot reach Kafka at 127.0.0.1:9092 (...): detail``, or with a
    ``hint`` what is wrong with a system that answers."""

    system: str
    address: str
    setting: str
    origin: str
    detail: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.system} at {self.address} ({self.origin}; set {self.setting} to change it)"
        if self.hint:
            return f"{where} {self.hint}: {self.detail}"
        return f"cannot reach {where}: {self.detail}"


def diagnose(exc: BaseException, settings: Settings) -> DependencyProblem | None:
    """The dependency ``exc`` says is unreachable (or not set up), or None for any other fault."""
    for err in _causes(exc):
        library = _library_of(err)
        if library is None:
            continue
        system, field = _SYSTEMS[library]
        if isinstance(err, NotAnswering):
            system, field = _SYSTEMS_BY_FIELD[err.field], err.field
        hint = ""
        if isinstance(err, asyncpg.UndefinedTableError):
            hint = f"has no tables in schema {settings.db_schema!r}; run `coupon-issuer migrate`"
        if isinstance(err, MovedError):
            hint = "is a Redis Cluster; set COUPON_REDIS_CLUSTER=true"
        return DependencyProblem(
            system=system,
            address=redact(str(getattr(settings, field))),
            setting=f"COUPON_{field.upper()}",
            origin=setting_origin(settings, field),
            detail=_detail(err),
            hint=hint,
        )
    return None


def _library_of(err: BaseException) -> str | None:
    if isinstance(err, NotAnswering):
        return next(lib for lib, (_, field) in _SYSTEMS.items() if field == err.field)
    if isinstance(err, KafkaConnectionError):
        return "aiokafka"
    if isinstance(
        err, RedisConnectionError | RedisTimeoutError | MovedError | RedisClusterException
    ):
        return "redis"
    if isinstance(err, _PG_ERRORS):
        return "asyncpg"
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, what it was raised from or during, and the members of exception groups."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        err = todo.pop(0)
        if id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        if isinstance(err, BaseExceptionGroup):
            todo.extend(err.exceptions)
        todo.extend(e for e in (err.__cause__, err.__context__) if e is not None)


def _detail(err: BaseException) -> str:
    if isinstance(err, DatabaseUnreachable) and err.__cause__ is not None:
        err = err.__cause__  # what the socket said, as asyncpg raised it
    if isinstance(err, NotAnswering):
        text = err.detail
    elif isinstance(err, KafkaConnectionError):
        text = "no broker answered"
    elif isinstance(err, ConnectionError) and err.errno:
        text = os.strerror(err.errno)  # "Connection refused", not the event loop's wording
    elif isinstance(err, OSError) and err.strerror:
        text = err.strerror
    else:
        text = str(err) or type(err).__name__
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


def redact(url: str) -> str:
    """``url`` without its password (DSNs may carry one)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
