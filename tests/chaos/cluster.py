"""The replication scenarios' Apache Kafka cluster: three KRaft nodes shared by the session.

Tests take nodes down on purpose through ``ClusterUnderTest``, so that a node that dies on its
own is still told apart and reported like every other session server (tests/servers.py
``watch``). Nodes are started from the event loop's thread (the main one, which outlives them:
see app/local_kafka.py on PDEATHSIG); the blocking waits run in worker threads, so a sale's
presses go on while a node stops or catches up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from app.local_kafka import KafkaCluster, KafkaNode

_START_S = 90  # a node replaying its log on a loaded 2-core box


@dataclass
class ClusterUnderTest:
    cluster: KafkaCluster
    downed: set[int] = field(default_factory=set)  # taken down by a test, not by accident

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    def leader(self, topic: str, partition: int) -> KafkaNode | None:
        return self.cluster.leader(topic, partition)

    def isr(self, topic: str, partition: int) -> tuple[int, ...]:
        state = self.cluster.partition(topic, partition)
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

    async def heal(self) -> None:
        """Every node running and listing every broker as live (what a scenario starts from)."""
        for node in self.cluster.nodes:
            if not node.alive():
                node.launch()
        self.downed.clear()
        for node in self.cluster.nodes:
            await asyncio.to_thread(node.wait_ready, _START_S, self.cluster.node_ids)

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
