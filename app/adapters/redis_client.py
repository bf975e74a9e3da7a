"""Redis clients for every process, in one place: one Redis server, or a Redis Cluster.

``COUPON_REDIS_CLUSTER`` chooses ``redis.asyncio.cluster.RedisCluster`` (seeded from
``COUPON_REDIS_URL``, any one node; it learns the rest from ``CLUSTER SLOTS``) instead of
``redis.asyncio.Redis``. The gate keeps every key a script touches on one slot (one hash tag per
coupon), so each call goes to the one node owning that coupon.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Any, TypeAlias

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    ClusterDownError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from app.config import Settings

RedisClient: TypeAlias = aioredis.Redis | RedisCluster

# Every way Redis says "not now" rather than "no": the node is away, or (a cluster) a slot has no
# live owner yet. The API answers them 503, the consumer waits them out.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
)

# The API's client: a command waits at most this long for a reply, idle connections are checked
# before use after this long, and a dropped connection is replaced and the call retried (safe:
# the gate script is idempotent per request id).
_API_SOCKET_TIMEOUT_S = 2.0
_API_HEALTH_CHECK_S = 15


class PackedInC(Connection):
    """A connection that packs commands with hiredis (C), as redis-py's synchronous client does;
    its asyncio client packs them in Python, about 11 µs per gate call against 1 µs (the bytes
    are the same, tests/unit/test_redis_packing.py). An argument hiredis refuses (``None``, a
    bool, a bytearray) goes to redis-py's packer, which encodes it or raises its ``DataError``.

    A ``redis://`` URL only: ``unix://`` and ``rediss://`` URLs choose their own connection class.
    """

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        command = args[0]
        if isinstance(command, str) and " " not in command:
            try:
                return [hiredis.pack_command(args)]  # type: ignore[arg-type]  # it raises TypeError
            except TypeError:
                pass
        return super().pack_command(*args)


def connect(settings: Settings, *, socket_timeout: float | None = None) -> RedisClient:
    """A client for a consumer or a one-off command (verify, reconcile)."""
    options: dict[str, Any] = {} if socket_timeout is None else {"socket_timeout": socket_timeout}
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **options)
    return aioredis.from_url(settings.redis_url, connection_class=PackedInC, **options)


def connect_api(settings: Settings) -> RedisClient:
    """The API's client: at most ``redis_max_connections`` commands at a time; a burst of presses
    queues for one (up to ``redis_pool_timeout_s``) instead of failing once all are busy.

    Waiting longer raises ``ConnectionError("No connection available.")`` on both kinds, as
    redis-py's ``BlockingConnectionPool`` does, so the API answers it the same way.
    """
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=3)
    if settings.redis_cluster:
        return QueuedRedisCluster.from_url(
            settings.redis_url,
            queue_limit=settings.redis_max_connections,
            queue_timeout_s=settings.redis_pool_timeout_s,
            # Per node; one more than the callers that can be inside at once, for the outcome
            # feed's subscription.
            max_connections=settings.redis_max_connections + 1,
            socket_timeout=_API_SOCKET_TIMEOUT_S,
            health_check_interval=_API_HEALTH_CHECK_S,
            retry=retry,  # on a cluster: re-reads the slot map, then retries
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        connection_class=PackedInC,  # a unix:// or rediss:// URL overrides it
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        socket_timeout=_API_SOCKET_TIMEOUT_S,
        health_check_interval=_API_HEALTH_CHECK_S,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return aioredis.Redis.from_pool(pool)  # closing the client closes the pool


async def ping(client: RedisClient) -> bool:
    """Whether Redis answers: on a cluster, every primary (each owns some coupons)."""
    if isinstance(client, RedisCluster):
        return bool(await client.ping(target_nodes=RedisCluster.PRIMARIES))
    return bool(await client.ping())


async def subscriber(client: RedisClient, turn: int) -> PubSub:
    """A pub/sub connection for classic (PUBLISH) channels and patterns.

    A cluster forwards every PUBLISH to every node over its bus, so one subscription on any node
    hears them all; ``turn`` picks the node round-robin, so that resubscribing after a node is
    lost moves on to the next one.
    """
    if isinstance(client, RedisCluster):
        await client.initialize()
        primaries = client.get_primaries()
        return client.pubsub(node=primaries[turn % len(primaries)])
    return client.pubsub()


class QueuedRedisCluster(RedisCluster):
    """A ``RedisCluster`` whose callers queue for one of ``queue_limit`` places, as on a
    ``BlockingConnectionPool``: its own per-node pools refuse at once when full
    (``MaxConnectionsError``).

    A connection closed under a command is a ``ConnectionError`` too (see
    ``closed_under_it_as_connection_error``). A command or pipeline holds one place while it runs; what it calls meanwhile (a pipeline
    falling back to single commands, a script being loaded) runs in the place it holds. When no
    node answers, it raises ``ConnectionError`` as one Redis would (redis-py's cluster client
    raises ``RedisClusterException``, which is also what it raises for a bug such as a
    cross-slot call).
    """

    def __init__(self, *args: Any, queue_limit: int, queue_timeout_s: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._places = asyncio.Semaphore(queue_limit)
        self._queue_timeout_s = queue_timeout_s
        self._inside: ContextVar[bool] = ContextVar(f"inside-{id(self)}", default=False)

    @contextlib.asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """Hold a place for the duration (re-entrant within one task)."""
        if self._inside.get():
            yield
            return
        try:
            async with asyncio.timeout(self._queue_timeout_s):
                await self._places.acquire()
        except TimeoutError as exc:
            raise RedisConnectionError("No connection available.") from exc
        token = self._inside.set(True)
        try:
            yield
        finally:
            self._inside.reset(token)
            self._places.release()

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> RedisCluster:
        with _unreachable_as_connection_error():
            return await super().initialize(additional_startup_nodes_info, last_failed_node_name)

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        async with self.place():
            with closed_under_it_as_connection_error():
                return await super().execute_command(*args, **kwargs)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return _QueuedPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py does


class _QueuedPipeline(ClusterPipeline):
    """A cluster pipeline that holds one of its client's places while it executes."""

    def __init__(self, client: QueuedRedisCluster, transaction: Any | None = None) -> None:
        super().__init__(client, transaction)
        self._queued_client = client

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        async with self._queued_client.place():
            with closed_under_it_as_connection_error():
                return await super().execute(raise_on_error, allow_redirections)


@contextlib.contextmanager
def _unreachable_as_connection_error() -> Iterator[None]:
    """Learning the cluster from no node at all is redis-py's ``RedisClusterException`` raised
    from the last connection error: make it that connection error's kind."""
    try:
        yield
    except RedisClusterException as exc:
        if isinstance(exc.__cause__, REDIS_UNAVAILABLE) and not isinstance(exc, REDIS_UNAVAILABLE):
            raise RedisConnectionError(str(exc)) from exc
        raise


# The parts of a connection redis-py sets to None when it disconnects: its stream reader and
# writer, and the hiredis parser's reader. An AttributeError on a None for one of their members
# (or for the reader's ``_buffer``, which redis-py's parsers read) is that connection torn down.
_TORN_DOWN_PARTS = (asyncio.StreamReader, asyncio.StreamWriter, hiredis.Reader)
_TORN_DOWN_MEMBERS = frozenset(
    {"_buffer"}.union(
        *((name for name in dir(part) if not name.startswith("__")) for part in _TORN_DOWN_PARTS)
    )
)


@contextlib.contextmanager
def closed_under_it_as_connection_error() -> Iterator[None]:
    """A connection closed while a command used it is a ``ConnectionError``, as it should be.

    When a cluster node stops answering, redis-py's cluster client disconnects that node's
    connections (or all of them) to recover, including ones other tasks are sending on; their
    write or read then fails on the socket's torn-down parts with ``AttributeError`` ("'NoneType'
    object has no attribute 'writelines'"), or, under uvloop, with ``RuntimeError`` ("unable to
    perform operation on <TCPTransport closed=True ...>; the handler is closed"), which no retry
    policy and no 503 mapping knows (redis/redis-py#4287 is the same class of failure).
    """
    try:
        yield
    except RuntimeError as exc:
        if "the handler is closed" not in str(exc):
            raise
        raise RedisConnectionError(f"connection closed under the command: {exc}") from exc
    except AttributeError as exc:
        if exc.obj is not None or exc.name not in _TORN_DOWN_MEMBERS:
            raise
        raise RedisConnectionError(f"connection closed under the command: {exc}") from exc
