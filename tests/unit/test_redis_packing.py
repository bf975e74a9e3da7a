"""The connection that packs commands with hiredis sends the very bytes redis-py's own packer
sends, and leaves what hiredis refuses to redis-py (app/adapters/redis_client.py)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from app.adapters import redis_client
from app.adapters.redis_client import PackedInC
from app.config import Settings

ARGUMENTS: list[tuple[Any, ...]] = [
    ("EVALSHA", "0" * 40, 3, "gate:{c}:stock", b"gate:{c}:users", "q", "user-1", 1733540000123, 5),
    ("SET", "k", 1.5, 0.1, -0.0, 3.0, 1e20, -7, 0),
    ("SET", "ü", "日本", b"\x00\xff", memoryview(b"view")),
    ("PING",),
    ("CONFIG GET", "maxmemory"),  # a command of two words: redis-py splits it
    (b"CONFIG GET", "maxmemory"),
    ("SET", "k", bytearray(b"x")),  # hiredis refuses a bytearray: redis-py's packer decides
]


@pytest.mark.parametrize("args", ARGUMENTS, ids=lambda a: str(a[0]))
def test_the_bytes_are_redis_pys(args: tuple[Any, ...]) -> None:
    ours, theirs = PackedInC(), Connection()
    try:
        expected = b"".join(bytes(part) for part in theirs.pack_command(*args))
    except DataError:
        with pytest.raises(DataError):
            ours.pack_command(*args)
        return
    assert b"".join(bytes(part) for part in ours.pack_command(*args)) == expected


@pytest.mark.parametrize("bad", [None, True, [1], {"a": 1}])
def test_what_redis_py_refuses_is_still_refused(bad: Any) -> None:
    with pytest.raises(DataError):
        PackedInC().pack_command("SET", "k", bad)


def test_a_pipeline_packs_every_command_the_same() -> None:
    commands = [args for args in ARGUMENTS if not isinstance(args[-1], bytearray)]
    ours = b"".join(bytes(p) for p in PackedInC().pack_commands(commands))
    theirs = b"".join(bytes(p) for p in Connection().pack_commands(commands))
    assert ours == theirs


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis://h:1/2?socket_timeout=3"])
async def test_the_clients_use_it_on_a_redis_url(url: str) -> None:
    settings = Settings(redis_url=url)
    for client in (redis_client.connect(settings), redis_client.connect_api(settings)):
        try:
            assert isinstance(client, aioredis.Redis)
            assert client.connection_pool.connection_class is PackedInC
        finally:
            await client.aclose()


@pytest.mark.parametrize("url", ["unix:///tmp/redis.sock", "rediss://127.0.0.1:6380/0"])
async def test_other_schemes_keep_their_own_connection(url: str) -> None:
    client = redis_client.connect_api(Settings(redis_url=url))
    try:
        assert isinstance(client, aioredis.Redis)
        assert client.connection_pool.connection_class is not PackedInC
    finally:
        await client.aclose()
