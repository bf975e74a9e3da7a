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
