"""The test session's own servers: started by the harness, and a death reported as such."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests import servers

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]


async def test_the_session_servers_serve_on_loopback() -> None:
    session = servers.session_servers()
    conn = await asyncpg.connect(session.database_url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT inet_server_addr()::text") in {None, "127.0.0.1/32"}
    finally:
        await conn.close()
    client = aioredis.from_url(session.redis_url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    assert session.newly_dead() == []


def test_a_server_that_dies_stops_the_run_with_its_log(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An inner session with the same hooks: PostgreSQL is ours (given by URL), Redis its own.
    monkeypatch.setenv("COUPON_TEST_DATABASE_URL", servers.database_url())
    monkeypatch.delenv("COUPON_TEST_REDIS_URL", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest(
        "from tests.conftest import pytest_runtest_makereport, pytest_sessionfinish\n"
    )
    pytester.makepyfile(
        test_inner="""
from tests import servers

def test_kills_the_redis():
    (redis,) = servers.session_servers().owned
    redis.kill()

def test_never_runs():
    pass
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, out
    result.assert_outcomes(failed=1)
    assert "a session server died" in out
    assert "Redis on 127.0.0.1:" in out and "killed by signal 9" in out
    assert "Ready to accept connections" in out  # the last lines of its log
    assert "test_never_runs" not in out
