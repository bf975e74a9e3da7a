"""Session-scoped real servers. PostgreSQL and Redis run on the machine; tansu and a three-master
Redis Cluster are started here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from app.devstack import TansuBroker
from harness.redis_cluster import LoopbackRedisCluster
from tests.stack import Stack, isolated_settings


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """One memory-only Kafka-compatible broker for the whole session (tests use own topics)."""
    broker = TansuBroker().start()
    yield broker.bootstrap
    broker.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """An API and three consumers on their own topic/schema, shared by tests that use own coupons."""
    settings = isolated_settings(kafka_bootstrap)
    stack = await Stack(settings, Path(tmp_path_factory.mktemp("shared-stack"))).start(consumers=3)
    yield stack
    await stack.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[LoopbackRedisCluster]:
    """A Redis Cluster of three masters on loopback for the whole session."""
    cluster = LoopbackRedisCluster(Path(tmp_path_factory.mktemp("redis-cluster")))
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def cluster_stack(
    kafka_bootstrap: str,
    redis_cluster: LoopbackRedisCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """The shared stack's twin on the Redis Cluster (COUPON_REDIS_CLUSTER=true)."""
    settings = isolated_settings(kafka_bootstrap, redis_url=redis_cluster.url, redis_cluster=True)
    stack = await Stack(settings, Path(tmp_path_factory.mktemp("cluster-stack"))).start(consumers=3)
    yield stack
    await stack.stop()


@pytest.fixture(params=["redis", "redis-cluster"])
def stack_on_each_redis(request: pytest.FixtureRequest) -> Stack:
    """``shared_stack``, then ``cluster_stack``: a test taking it runs on one Redis and on a
    Redis Cluster."""
    name = "shared_stack" if request.param == "redis" else "cluster_stack"
    stack: Stack = request.getfixturevalue(name)
    return stack
