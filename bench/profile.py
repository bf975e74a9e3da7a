"""Where a sale's work goes outside the API, read from the servers themselves: Redis's
``INFO commandstats`` and PostgreSQL's ``pg_stat_statements`` (when the server preloads it),
reset at the load's start and read after the drain, and the sale's batch transactions.

``pg_stat_statements`` needs ``shared_preload_libraries``: the PostgreSQL the bench starts has no
such setting, so a profile of the statements points the bench at a server that does
(``COUPON_DATABASE_URL``; docs/performance.md shows how). Without it the statements are left out
and said so.
"""

from __future__ import annotations

import contextlib
from typing import Any

import asyncpg

from app.adapters import redis_client
from app.config import Settings

_TOP = 20  # statements reported, by total execution time


async def _redis_info(settings: Settings, section: str) -> dict[str, Any]:
    client = redis_client.connect(settings)
    try:
        info: dict[str, Any] = await client.info(section)
        return info
    finally:
        await client.aclose()


async def start(settings: Settings, conn: asyncpg.Connection) -> bool:
    """Reset both servers' counters; whether PostgreSQL's statements can be read."""
    client = redis_client.connect(settings)
    try:
        await client.config_resetstat()
    finally:
        await client.aclose()
    with contextlib.suppress(asyncpg.PostgresError):  # the database's counters (a superuser's)
        await conn.execute("SELECT pg_stat_reset()")
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
    except asyncpg.PostgresError:
        return False
    return True


async def read(settings: Settings, conn: asyncpg.Connection, statements: bool) -> dict[str, Any]:
    """Redis's commands (calls, µs) and PostgreSQL's statements (calls, ms, rows) since
    ``start``, with the number of batch transactions the sale wrote."""
    stats = await _redis_info(settings, "commandstats")
    redis = {
        name.removeprefix("cmdstat_"): {"calls": v["calls"], "usec": v["usec"]}
        for name, v in stats.items()
        if isinstance(v, dict)
    }
    out: dict[str, Any] = {
        "redis_commands": dict(sorted(redis.items(), key=lambda kv: -kv[1]["usec"])),
        "batches": int(
            await conn.fetchval("SELECT count(DISTINCT processed_at) FROM issue_requests")
        ),
    }
    if not statements:
        out["pg_statements"] = "not read: the server does not preload pg_stat_statements"
        return out
    with contextlib.suppress(asyncpg.PostgresError):  # a view this version names otherwise
        rows = await conn.fetch(
            "SELECT calls, total_exec_time AS ms, rows, wal_bytes, left(query, 160) AS query"
            " FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT $1",
            _TOP,
        )
        out["pg_statements"] = [dict(r) for r in rows]
        xacts = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
        out["pg_database"] = dict(xacts) if xacts else {}
    return out
