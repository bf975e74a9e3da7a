"""The test session's PostgreSQL and Redis: the one place every test finds them.

Started on first use, one of each for the whole session, on free loopback ports with their own
data directories (``app.local.servers``), and stopped when the session ends. A run pointed at
servers of its own names them with ``COUPON_TEST_DATABASE_URL`` / ``COUPON_TEST_REDIS_URL``
(the database is used as is; tests keep to schemas and key prefixes of their own).

Other session-wide servers (the broker, the Redis Cluster) are ``watch``ed too: a server that
dies mid-run stops the session with its name and its log's last lines (see tests/conftest.py)
instead of failing every later test for a reason of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse, urlunparse

from app.local.servers import LocalServer, PostgresServer, RedisServer

Probe = Callable[[], str | None]  # None while the server lives, else what happened to it


@dataclass
class SessionServers:
    database_url: str
    redis_url: str
    owned: list[LocalServer] = field(default_factory=list)
    probes: dict[str, Probe] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)

    def watch(self, name: str, probe: Probe) -> None:
        """Report ``name`` when ``probe`` says it is gone (``unwatch`` before stopping it)."""
        self.probes[name] = probe

    def unwatch(self, name: str) -> None:
        self.probes.pop(name, None)

    def newly_dead(self) -> list[str]:
        """What each server found gone since the last call says about itself."""
        found = {name: what for name, probe in self.probes.items() if (what := probe())}
        fresh = [what for name, what in found.items() if name not in self.reported]
        self.reported.update(found)
        return fresh

    def stop(self) -> None:
        self.probes.clear()
        for server in reversed(self.owned):
            server.remove()


_servers: SessionServers | None = None


def session_servers() -> SessionServers:
    """The session's servers, started on the first call."""
    global _servers
    if _servers is None:
        _servers = _start()
    return _servers


def started() -> SessionServers | None:
    """The session's servers if anything asked for them, without starting them."""
    return _servers


def stop() -> None:
    global _servers
    if _servers is not None:
        _servers.stop()
        _servers = None


def _start() -> SessionServers:
    owned: list[LocalServer] = []
    database_url = os.environ.get("COUPON_TEST_DATABASE_URL")
    redis_url = os.environ.get("COUPON_TEST_REDIS_URL")
    try:
        if not database_url:
            postgres = PostgresServer(durable=False).start()
            owned.append(postgres)
            database_url = postgres.url
        if not redis_url:
            redis = RedisServer().start()
            owned.append(redis)
            redis_url = redis.url
    except BaseException:
        for server in owned:
            server.remove()
        raise
    servers = SessionServers(database_url, redis_url, owned)
    for server in owned:
        servers.watch(server.name, server.describe_exit)
    return servers


def database_url() -> str:
    return session_servers().database_url


def redis_url() -> str:
    return session_servers().redis_url


def database_url_as(user: str, *, port: int | None = None, database: str | None = None) -> str:
    """The session's DSN logging in as ``user`` (no password: trust auth on loopback), optionally
    through another port (a pooler) or to another database name."""
    parsed = urlparse(database_url())
    host = parsed.hostname or "127.0.0.1"
    port = port or parsed.port
    netloc = f"{user}@{host}" + (f":{port}" if port else "")
    path = f"/{database}" if database else parsed.path
    return urlunparse(parsed._replace(netloc=netloc, path=path))


def database_address() -> tuple[str, int | None, str]:
    """(host, port, database name) of the session's PostgreSQL (port None: libpq's default)."""
    parsed = urlparse(database_url())
    return parsed.hostname or "127.0.0.1", parsed.port, parsed.path.lstrip("/")
