"""Session-scoped real servers, all started by the harness: PostgreSQL and Redis (tests/servers.py,
on first use), the broker and a three-master Redis Cluster (fixtures below). A session server that
dies stops the run with its name and its log's last lines (the hooks at the end)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from app.local.kafka import KafkaNode
from harness.redis_cluster import LoopbackRedisCluster
from tests import servers
from tests.stack import Stack, isolated_settings, stack_fixture


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Apache Kafka node (KRaft, log dirs on disk) for the whole session (tests use own
    topics)."""
    broker = KafkaNode(Path(tmp_path_factory.mktemp("kafka"))).start()
    watched = servers.session_servers()
    watched.watch("broker", lambda: kafka_exit(broker, "the session's Kafka broker"))
    yield broker.bootstrap
    watched.unwatch("broker")
    broker.stop()


shared_stack = stack_fixture(
    "shared_stack", "An API and three consumers shared by tests that use coupons of their own."
)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[LoopbackRedisCluster]:
    """A Redis Cluster of three masters on loopback for the whole session."""
    cluster = LoopbackRedisCluster(Path(tmp_path_factory.mktemp("redis-cluster")))
    watched = servers.session_servers()
    try:
        await cluster.start()
        watched.watch("redis-cluster", cluster.describe_exit)
        yield cluster
    finally:
        watched.unwatch("redis-cluster")
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


def kafka_exit(node: KafkaNode, name: str) -> str | None:
    """None while ``node`` runs; else its exit code and its log's last lines."""
    if node.alive() or node.process is None:
        return None
    code = node.process.popen.returncode
    return f"{name} on {node.bootstrap} exited with code {code}; last lines of its log:\n" + (
        node.log_tail(20)
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """After each phase of a test: a session server found dead is written into this test's
    report and stops the session, so the cause is read once, not guessed from later failures."""
    report = yield
    watched = servers.started()
    if watched is None:
        return report
    dead = watched.newly_dead()
    if dead:
        text = "\n\n".join(dead)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = (
                f"a session server died (found after this test's {call.when}):\n{text}"
            )
        else:
            report.sections.append(("session server died", text))
        item.session.shouldstop = f"a session server died: {dead[0].splitlines()[0]}"
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    servers.stop()
