"""The Redis client factory's fault mapping, without a server."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from app.adapters.redis_client import closed_under_it_as_connection_error


async def test_a_connection_closed_under_a_command_is_a_connection_error() -> None:
    closed = Connection()  # what another task's recovery leaves: no writer, no reader
    with pytest.raises(RedisConnectionError, match="closed under the command"):
        with closed_under_it_as_connection_error():
            await closed._send_packed_command([b"PING\r\n"])


def _our_bug() -> Any:
    missing: Any = None
    return missing.attribute


def test_a_none_error_of_our_own_stays_what_it_is() -> None:
    with pytest.raises(AttributeError), closed_under_it_as_connection_error():
        _our_bug()


def test_a_closed_uvloop_transport_is_a_connection_error() -> None:
    """The API runs on uvloop, whose closed transport refuses a write with a RuntimeError."""
    import asyncio

    import uvloop

    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.abort()
        await asyncio.sleep(0)  # the transport closes on the next loop iteration
        try:
            with pytest.raises(RedisConnectionError, match="closed under the command"):
                with closed_under_it_as_connection_error():
                    writer.writelines([b"PING\r\n"])
        finally:
            server.close()

    uvloop.run(scenario())


def test_another_runtime_error_stays_what_it_is() -> None:
    with pytest.raises(RuntimeError, match="ours"), closed_under_it_as_connection_error():
        raise RuntimeError("ours")
