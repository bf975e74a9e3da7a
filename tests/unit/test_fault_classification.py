"""The answers of the two fault classifiers for real exceptions, raised by the client libraries
themselves against loopback sockets (a closed port, a server that never answers): which system
``diagnose`` blames, and which errors ``closed_under_it_as_connection_error`` makes a
``ConnectionError``. A table, so that a change of how they classify keeps every answer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from app.adapters import postgres_setup
from app.adapters.kafka import running
from app.adapters.redis_client import closed_under_it_as_connection_error
from app.config import Settings
from app.unreachable import diagnose


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CLOSED = _closed_port()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client goes away
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def _raised(operation: Callable[[], Awaitable[object]]) -> BaseException:
    try:
        await operation()
    except Exception as exc:
        return exc
    raise AssertionError("the operation did not fail")


async def _postgres_refused(port: int) -> None:
    await postgres_setup.connect(f"postgresql://127.0.0.1:{CLOSED}/coupons", timeout_s=5)


async def _postgres_silent(port: int) -> None:
    await postgres_setup.connect(f"postgresql://127.0.0.1:{port}/coupons", timeout_s=0.3)


async def _redis(url: str, **options: Any) -> None:
    client = aioredis.from_url(url, **options)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _redis_refused(port: int) -> None:
    await _redis(f"redis://127.0.0.1:{CLOSED}/0")


async def _redis_silent(port: int) -> None:
    await _redis(f"redis://127.0.0.1:{port}/0", socket_timeout=0.3)


async def _kafka_refused(port: int) -> None:
    async with running(AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{CLOSED}")):
        pass


async def _our_socket_refused(port: int) -> None:
    await asyncio.open_connection("127.0.0.1", CLOSED)


async def _our_timeout(port: int) -> None:
    await asyncio.wait_for(asyncio.sleep(5), 0.01)


async def _our_file(port: int) -> None:
    open("/nonexistent/coupon-issuer/file")  # noqa: ASYNC230  # the error is the point


async def _wrapped_postgres_refused(port: int) -> None:
    try:
        await _postgres_refused(port)
    except OSError as exc:
        raise RuntimeError("startup failed") from exc


async def _grouped_redis_refused(port: int) -> None:
    failure = await _raised(lambda: _redis_refused(port))
    assert isinstance(failure, Exception)
    raise ExceptionGroup("tasks", [ValueError("other"), failure])


SETTINGS = Settings(
    _env_file=None,
    kafka_bootstrap=f"127.0.0.1:{CLOSED}",
    redis_url=f"redis://127.0.0.1:{CLOSED}/0",
    database_url=f"postgresql://127.0.0.1:{CLOSED}/coupons",
)


@pytest.mark.parametrize(
    ("failure", "system"),
    [
        (_postgres_refused, "PostgreSQL"),  # asyncpg's bare ConnectionRefusedError, typed
        (_postgres_silent, "PostgreSQL"),  # asyncpg's bare TimeoutError, typed
        (_redis_refused, "Redis"),
        (_redis_silent, "Redis"),
        (_kafka_refused, "Kafka"),
        (_our_socket_refused, None),  # a socket of ours, no client library under it
        (_our_timeout, None),
        (_our_file, None),
        (_wrapped_postgres_refused, "PostgreSQL"),
        (_grouped_redis_refused, "Redis"),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)).lstrip("_"),
)
async def test_which_system_diagnose_blames(
    failure: Callable[[int], Awaitable[None]], system: str | None, silent_port: int
) -> None:
    exc = await _raised(lambda: failure(silent_port))
    problem = diagnose(exc, SETTINGS)
    assert (problem and problem.system) == system, repr(exc)


def _none_attribute() -> Any:
    missing: Any = None
    return missing.attribute


async def _write_unconnected() -> None:
    await Connection()._send_packed_command([b"PING\r\n"])  # no writer: 'NoneType'.writelines


async def _read_unconnected() -> None:
    await Connection().read_response()  # the parser was never connected (not a None)


async def _our_none_bug() -> None:
    _none_attribute()


async def _our_runtime_error() -> None:
    raise RuntimeError("ours")


async def _our_type_error() -> None:
    len(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("failure", "raised"),
    [
        (_write_unconnected, RedisConnectionError),
        (_read_unconnected, AttributeError),
        (_our_none_bug, AttributeError),
        (_our_runtime_error, RuntimeError),
        (_our_type_error, TypeError),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)).lstrip("_"),
)
async def test_what_a_redis_command_raises(
    failure: Callable[[], Awaitable[None]], raised: type[Exception]
) -> None:
    def classified() -> Awaitable[None]:
        async def run() -> None:
            with closed_under_it_as_connection_error():
                await failure()

        return run()

    exc = await _raised(classified)
    assert type(exc) is raised, repr(exc)
