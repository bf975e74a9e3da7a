"""The servers the local stack starts flush to disk when asked (the bench, ``make run``), and skip
it otherwise (the tests' own): what a sale costs is measured with fsync on."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import redis

from app.config import Settings
from app.local import stack


@pytest.mark.parametrize(
    ("durable", "flushes"), [(True, True), (None, False)], ids=["durable", "default"]
)
def test_the_started_servers_flush_as_asked(
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    durable: bool | None,
    flushes: bool,
) -> None:
    # Whatever answers on this machine's default ports, the stack starts servers of its own.
    monkeypatch.setattr(stack, "_answers", lambda url, port: False)
    settings = Settings(kafka_bootstrap=kafka_bootstrap)

    with stack.local_systems(settings, durable=durable) as (resolved, started):
        assert {p.name for p in started} == {"PostgreSQL", "Redis"}
        postgres = asyncio.run(_postgres_flushes(resolved.database_url))
        client = redis.Redis.from_url(resolved.redis_url, decode_responses=True)
        try:
            aof = client.config_get("append*")
        finally:
            client.close()

    on = "on" if flushes else "off"
    assert postgres == {"fsync": on, "synchronous_commit": on, "full_page_writes": on}
    assert aof["appendonly"] == ("yes" if flushes else "no")
    if flushes:
        assert aof["appendfsync"] == "everysec"


async def _postgres_flushes(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        return {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("fsync", "synchronous_commit", "full_page_writes")
        }
    finally:
        await conn.close()
