"""The chaos stack: one API and three consumers shared by the consumer and database scenarios;
and the three-node Kafka cluster shared by the replication scenarios."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.local.kafka import KafkaCluster
from tests import servers
from tests.chaos.cluster import ClusterUnderTest
from tests.stack import stack_fixture

chaos_stack = stack_fixture(
    "chaos_stack",
    "Own topic, schema, Redis prefix and group; scenarios kill and replace its consumers.",
)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterUnderTest]:
    """Three KRaft nodes on loopback (RF 3, min ISR 2) for every replication scenario; a node
    that dies without a test taking it down is reported like the session's other servers."""
    cluster = ClusterUnderTest(KafkaCluster(Path(tmp_path_factory.mktemp("kafka-cluster"))))
    watched = servers.session_servers()
    try:
        cluster.cluster.start()  # in the main thread: the nodes die with the thread starting them
        watched.watch("kafka-cluster", cluster.unexpected_exit)
        yield cluster
    finally:
        watched.unwatch("kafka-cluster")
        cluster.cluster.stop()
