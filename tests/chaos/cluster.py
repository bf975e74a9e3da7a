"""The replication scenarios' Apache Kafka cluster: three KRaft nodes shared by the session.

Tests take nodes down on purpose through ``ClusterUnderTest``, so that a node that dies on its
own is still told apart and reported like every other session server (tests/servers.py
``watch``). Nodes are started from the event loop's thread (the main one, which outlives them:
see app/local/kafka.py on PDEATHSIG); the blocking waits run in worker threads, so a sale's
presses go on while a node stops or catches up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from app.adapters.kafka import request_topic_configs
from app.config import Settings
from app.local.kafka import KafkaCluster
from harness import wait_until

_START_S = 90  # a node replaying its log on a loaded 2-core box


@dataclass
class ClusterUnderTest:
    cluster: KafkaCluster
    downed: set[int] = field(default_factory=set)  # taken down by a test, not by accident

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    async def leader(self, topic: str, partition: int) -> int | None:
        """The node leading ``topic``'s ``partition``, None while it has none. Metadata is read
        in a worker thread: a node that does not answer must not stop the sale's presses."""
        node = await asyncio.to_thread(self.cluster.leader, topic, partition)
        return node.node_id if node is not None else None

    async def isr(self, topic: str, partition: int) -> tuple[int, ...]:
        state = await asyncio.to_thread(self.cluster.partition, topic, partition)
        return state.isr if state is not None else ()

    def kill(self, node_id: int) -> None:
        """SIGKILL one node."""
        self.downed.add(node_id)
        self.cluster.kill(node_id)

    async def stop_node(self, node_id: int) -> int | None:
        """SIGTERM one node and wait for its controlled shutdown; returns its exit code."""
        self.downed.add(node_id)
        return await asyncio.to_thread(self.cluster.node(node_id).stop)

    async def start_node(self, node_id: int) -> None:
        """Start a node again from its log dirs; wait until every live node lists it."""
        node = self.cluster.node(node_id)
        if not node.alive():
            node.launch()
        self.downed.discard(node_id)
        live = frozenset(n.node_id for n in self.cluster.live_nodes())
        await asyncio.to_thread(node.wait_ready, _START_S, live)

    async def start_nodes(self, *node_ids: int) -> None:
        """Start several nodes at once (a quorum may need them all) and wait for each."""
        for node_id in node_ids:
            node = self.cluster.node(node_id)
            if not node.alive():
                node.launch()
        self.downed -= set(node_ids)
        live = frozenset(n.node_id for n in self.cluster.live_nodes())
        for node_id in node_ids:
            await asyncio.to_thread(self.cluster.node(node_id).wait_ready, _START_S, live)

    async def heal(self) -> None:
        """Every node running and listing every broker as live (what a scenario starts from)."""
        for node in self.cluster.nodes:
            if not node.alive():
                node.launch()
        self.downed.clear()
        for node in self.cluster.nodes:
            await asyncio.to_thread(node.wait_ready, _START_S, self.cluster.node_ids)

    async def coordinator_of(self, group: str) -> int:
        """The node coordinating consumer group ``group`` (the offsets topic is made on first
        use, so the first answers may be "not available yet")."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:

            async def found() -> int:  # 0 (no node has it) until one answers
                try:
                    return int(await admin.find_coordinator(group))
                except KafkaError:
                    return 0

            return await wait_until(found, 60, f"a coordinator for group {group}", 0.5)
        finally:
            await admin.close()

    async def create_request_topic(self, settings: Settings, replicas: tuple[int, ...]) -> None:
        """Create ``settings``' request topic (as the service would) with every partition on
        ``replicas`` in that order: led by the first, then, if it dies, by the second."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            configs = request_topic_configs(
                settings.min_insync_replicas, settings.delivery_timeout_ms
            )
            assignment = {p: list(replicas) for p in range(settings.partitions)}
            await admin.create_topics([NewTopic(settings.topic, -1, -1, assignment, configs)])
        finally:
            await admin.close()

        async def led() -> bool:
            leaders = [await self.leader(settings.topic, p) for p in range(settings.partitions)]
            return leaders == [replicas[0]] * settings.partitions

        await wait_until(led, 30, f"{settings.topic} to be led by node {replicas[0]}")

    def unexpected_exit(self) -> str | None:
        """None while every node a test did not take down runs; else which one exited, how."""
        for node in self.cluster.nodes:
            if node.node_id in self.downed or node.process is None or node.alive():
                continue
            code = node.process.popen.returncode
            return (
                f"kafka cluster node {node.node_id} on {node.bootstrap} exited with code {code};"
                f" last lines of its log:\n{node.log_tail(20)}"
            )
        return None
