"""Reaching PostgreSQL and preparing its schema: the pool every process opens, one connection for
a command, the probe, what a connection that fails raises, and the numbered migrations. The
statements the service runs are in postgres.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import asyncpg
from asyncpg import Connection, Pool

_MIGRATION_LOCK = 0x636F75706F6E  # advisory lock id: "coupon"


def consumer_connection_name(group: str) -> str:
    """The application_name of a consumer's connections: batches waiting on locks, or to be
    terminated, can be found in pg_stat_activity by consumer group."""
    return f"coupon-consumer:{group}"


async def create_pool(
    dsn: str,
    schema: str,
    size: int,
    application_name: str = "coupon-issuer",
    statement_cache_size: int = 100,
    reset_sessions: bool = True,
) -> Pool:
    """Open a pool whose connections use ``schema``; ``application_name`` shows in pg_stat_activity.

    ``reset_sessions=False`` for a process whose statements leave no session state (no SET,
    LISTEN, cursor or advisory lock): a connection given back to the pool is not reset, which
    saves a round trip and four statements per transaction (asyncpg still rolls back a
    transaction left open).

    ``statement_cache_size=0`` behind PgBouncer in transaction pooling mode: a named prepared
    statement lives on one server connection, and the next transaction may get another one.
    """
    with _reaching_database():
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            server_settings={"search_path": schema, "application_name": application_name[:63]},
            command_timeout=30,
            statement_cache_size=statement_cache_size,
            reset=None if reset_sessions else _keep_session,
        )
    current = await pool.fetchval("SELECT current_schema()")
    if current != schema:
        await pool.close()
        if current is None:
            raise SchemaMismatch(
                f"schema {schema!r} (COUPON_DB_SCHEMA) does not exist: run coupon-issuer migrate"
            )
        # A pooler (PgBouncer) drops the search_path startup parameter: writing to another
        # schema's tables would be silent and wrong.
        raise SchemaMismatch(
            f"connected to schema {current!r}, configured {schema!r} (COUPON_DB_SCHEMA): behind a"
            f" pooler set the role's search_path (ALTER ROLE ... SET search_path = {schema})"
        )
    return pool


async def _keep_session(conn: Connection) -> None:
    """A pool's reset that leaves the session as it is (see ``create_pool``)."""


async def connect(
    dsn: str,
    schema: str | None = None,
    application_name: str = "coupon-issuer",
    timeout_s: float = 60,
) -> Connection:
    """One connection, not a pool (a command that runs once); ``schema`` as its search_path."""
    settings = {"application_name": application_name[:63]}
    if schema is not None:
        settings["search_path"] = schema
    with _reaching_database():
        conn: Connection = await asyncpg.connect(dsn, timeout=timeout_s, server_settings=settings)
    return conn


async def probe_database(dsn: str, timeout_s: float = 10) -> None:
    """Connect once and leave: raises ``DatabaseUnreachable`` if PostgreSQL does not answer.

    For processes whose framework would bury that failure in its own traceback (uvicorn's lifespan).
    """
    conn = await connect(dsn, timeout_s=timeout_s)
    await conn.close()


class DatabaseUnreachable(ConnectionError):
    """PostgreSQL did not answer: refused, unknown host or no answer in time. Raised from what
    asyncpg raised, bare socket errors that do not say whose socket failed."""


@contextmanager
def _reaching_database() -> Iterator[None]:
    try:
        yield
    except DatabaseUnreachable:
        raise
    except OSError as exc:  # TimeoutError and ConnectionRefusedError are OSErrors
        raise DatabaseUnreachable(
            exc.errno, exc.strerror or str(exc) or type(exc).__name__
        ) from exc


class SchemaMismatch(Exception):
    """The connections do not use the configured schema."""


async def migrate(conn: Connection, schema: str) -> list[str]:
    """Apply pending numbered migrations in order; returns the names applied."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(schema)}")
        await conn.execute(f"SET search_path TO {_quote_ident(schema)}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in _migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied


def _migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("app.adapters") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()))
    return sorted(found)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- coupons ----------------------------------------------------------------------------------


async def apply_migrations(dsn: str, schema: str) -> list[str]:
    """Connect, migrate ``schema``, disconnect (the ``migrate`` subcommand)."""
    conn = await connect(dsn, application_name="coupon-migrate")
    try:
        return await migrate(conn, schema)
    finally:
        await conn.close()
