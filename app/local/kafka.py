"""Apache Kafka on loopback, from the jars ``make kafka`` fetched: one KRaft node, or three.

Every node is a combined controller+broker (``process.roles=broker,controller``) with a
directory of its own: ``server.properties``, ``data/`` (the log dirs and the metadata log),
``logs/server.log`` (log4j2, see mk/kafka/log4j2-broker.xml) and ``stdout.log`` (what the JVM
itself prints, e.g. a bad option). Restarting a node reuses that directory and its ports.

Durability is Kafka's own: the flush settings keep their defaults, so nothing is fsynced per
message and an acknowledged write sits in the OS page cache of every in-sync replica. A SIGKILL
of the JVM loses none of it (the kernel still holds the pages); only the machine going down
would, and that is what replication (``KafkaCluster``: RF 3, min ISR 2) is there for.

Processes are started with PDEATHSIG: call ``start``/``launch`` from a thread that outlives the
node (the main thread, not a short-lived worker), or the kernel stops the JVM with that thread.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from app.local.kafka_jars import (
    REPO,
    class_archive,
    java_command,
    new_cluster_id,
    run_tool,
)
from app.local.kafka_metadata import Metadata, PartitionState, fetch_metadata
from app.local.processes import ManagedProcess, absolute, detach_and_die_with_parent, free_port

BROKER_LOG4J2 = REPO / "mk" / "kafka" / "log4j2-broker.xml"

# A small heap (the machine runs many other processes) and the serial collector: a test broker
# holds little, and Serial starts fastest and adds no GC threads on a 2-core box.
BROKER_JVM = ("-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true")

# What makes a one-machine broker start fast and stay small; each is a broker default otherwise.
_QUICK_AND_SMALL = {
    "num.partitions": "3",
    "auto.create.topics.enable": "false",  # our code creates its topics
    "group.initial.rebalance.delay.ms": "0",
    # Made on the first group join / transaction: 50 partitions each by default, seconds of work.
    "offsets.topic.num.partitions": "5",
    "transaction.state.log.num.partitions": "5",
    # The default 128 MiB is allocated at start: a quarter of the heap.
    "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "num.recovery.threads.per.data.dir": "1",
    # A broker is unfenced on the heartbeat after it caught up (every 2 s by default).
    "broker.heartbeat.interval.ms": "500",
    # A broker killed and started again cannot register until its old lease ends (9 s default).
    "broker.session.timeout.ms": "3000",
    "unclean.leader.election.enable": "false",
}


def replication_defaults(nodes: int) -> dict[str, str]:
    """Internal and new topics on every node (RF ``nodes``), acks=all needing 2 copies if it can."""
    min_isr = str(min(2, nodes))
    return {
        "default.replication.factor": str(nodes),
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": str(nodes),
        "transaction.state.log.replication.factor": str(nodes),
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": str(nodes),
        "share.coordinator.state.topic.min.isr": min_isr,
    }


@dataclass
class KafkaNode:
    """One KRaft combined controller+broker on 127.0.0.1 (``start()``, ``stop()``, ``kill()``).

    ``voters`` is the quorum's ``controller.quorum.voters``; empty, the node is a quorum of one.
    ``overrides`` win over every default here.
    """

    directory: Path
    node_id: int = 1
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    voters: str = ""
    cluster_id: str = field(default_factory=new_cluster_id)
    overrides: dict[str, str] = field(default_factory=dict)
    process: ManagedProcess | None = field(default=None, init=False)
    _archive_dump: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # log.dirs, kafka.logs.dir and the config file name this directory: absolute, whatever
        # the caller gave (``--state-dir .local-stack``).
        self.directory = absolute(self.directory)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def server_log(self) -> Path:
        return self.directory / "logs" / "server.log"

    def config(self) -> dict[str, str]:
        """The node's server.properties."""
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters
            or f"{self.node_id}@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.directory / "data"),
            **_QUICK_AND_SMALL,
            **replication_defaults(1),
            **self.overrides,
        }

    def _write_config(self) -> Path:
        path = self.directory / "server.properties"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in self.config().items()))
        return path

    def formatted(self) -> bool:
        return (self.directory / "data" / "meta.properties").exists()

    def format(self) -> None:
        """Format the log dirs for ``cluster_id`` (``kafka-storage format``), once."""
        if not self.formatted():
            config = self._write_config()
            run_tool(
                "kafka-storage", "format", f"--cluster-id={self.cluster_id}", "-c", str(config)
            )

    def launch(self) -> None:
        """Start the JVM on the formatted directory and return at once (see ``wait_ready``)."""
        if self.alive():
            raise RuntimeError(f"kafka node {self.node_id} is already running")
        config = self._write_config()
        self.server_log.parent.mkdir(parents=True, exist_ok=True)
        extra = [f"-Dkafka.logs.dir={self.server_log.parent}"]
        self._archive_dump = None
        if not class_archive().exists():
            # Written when the JVM exits normally; a unique name, as nodes of a cluster race.
            self._archive_dump = class_archive().with_suffix(f".{uuid.uuid4().hex[:8]}.partial")
            extra.append(f"-XX:ArchiveClassesAtExit={self._archive_dump}")
        command = java_command(BROKER_JVM, BROKER_LOG4J2, "kafka.Kafka", *extra)
        with (self.directory / "stdout.log").open("ab") as out:
            popen = subprocess.Popen(
                [*command, str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=detach_and_die_with_parent,
            )
        self.process = ManagedProcess(f"kafka-{self.node_id}", popen)

    def metadata(self, topics: tuple[str, ...] = (), timeout: float = 2.0) -> Metadata:
        """This node's metadata (raises ``OSError`` if it does not answer)."""
        return fetch_metadata("127.0.0.1", self.port, topics, timeout)

    def wait_ready(self, timeout: float = 60, brokers: frozenset[int] | None = None) -> None:
        """Wait until the node answers a Metadata request listing ``brokers`` (itself by default)
        as live: it has joined the quorum, caught up and been unfenced."""
        wanted = brokers or frozenset({self.node_id})
        deadline = time.monotonic() + timeout
        seen: frozenset[int] = frozenset()
        while True:
            if not self.alive():
                code = self.process.popen.returncode if self.process else None
                raise RuntimeError(f"kafka node {self.node_id} exited ({code}):\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                seen = self.metadata(timeout=1.0).brokers
                if wanted <= seen:
                    return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"kafka node {self.node_id} on {self.bootstrap} did not list brokers "
                    f"{sorted(wanted)} within {timeout}s (it lists {sorted(seen)}):\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def start(self, timeout: float = 60) -> KafkaNode:
        """Format (the first time), start, and wait until it answers as a live broker."""
        self.format()
        self.launch()
        self.wait_ready(timeout)
        return self

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM: a controlled shutdown (leadership handed over, logs closed cleanly); SIGKILL
        after ``timeout``. Returns the exit code."""
        if self.process is None:
            return None
        self.resume()  # a stopped process would not act on the SIGTERM
        code = self.process.stop(signal.SIGTERM, timeout)
        self._keep_class_archive(code)
        return code

    def _keep_class_archive(self, code: int | None) -> None:
        dump, self._archive_dump = self._archive_dump, None
        if dump is None or not dump.exists():
            return
        if code in (0, 143):  # a clean exit wrote it whole; a killed JVM may have cut it short
            os.replace(dump, class_archive())
        else:
            dump.unlink()

    def kill(self) -> None:
        """SIGKILL: the JVM dies at once; what it acknowledged is in the page cache."""
        if self.process is not None:
            self._keep_class_archive(self.process.stop(signal.SIGKILL))

    def pause(self) -> None:
        """SIGSTOP: alive but silent, as in a long GC pause or a hung machine."""
        if self.alive():
            assert self.process is not None
            os.kill(self.process.popen.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        if self.alive():
            assert self.process is not None
            os.kill(self.process.popen.pid, signal.SIGCONT)

    def restart(self, timeout: float = 60) -> KafkaNode:
        """Stop the node if it runs, then start it again on the same directory and ports."""
        self.stop()
        self.launch()
        self.wait_ready(timeout)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` of the server log (of the JVM's own output if there is none)."""
        for path in (self.server_log, self.directory / "stdout.log"):
            if path.exists() and path.stat().st_size:
                with path.open(errors="replace") as f:
                    return "".join(collections.deque(f, maxlen=lines))
        return "(no log yet)"

    def __enter__(self) -> KafkaNode:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


ApacheKafka = KafkaNode


@dataclass
class KafkaCluster:
    """``size`` combined nodes in one KRaft quorum (node ids 1..size), RF ``size`` and min ISR 2
    for the internal topics and as the default for new ones.

    A killed broker loses its partitions' leadership once the controller stops hearing from it:
    ``session_timeout_ms`` (Kafka's default is 9 s) is kept short so that a test sees the
    failover within seconds; the heartbeat every 500 ms leaves room for a few late ones.
    """

    directory: Path
    size: int = 3
    session_timeout_ms: int = 3000
    overrides: dict[str, str] = field(default_factory=dict)
    nodes: list[KafkaNode] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        cluster_id = new_cluster_id()
        ids = range(1, self.size + 1)
        controller_ports = {i: free_port() for i in ids}
        voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in controller_ports.items())
        config = {
            **replication_defaults(self.size),
            "broker.session.timeout.ms": str(self.session_timeout_ms),
            **self.overrides,
        }
        self.nodes = [
            KafkaNode(
                self.directory / f"node-{i}",
                node_id=i,
                controller_port=controller_ports[i],
                voters=voters,
                cluster_id=cluster_id,
                overrides=config,
            )
            for i in ids
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def node_ids(self) -> frozenset[int]:
        return frozenset(n.node_id for n in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def live_nodes(self) -> list[KafkaNode]:
        return [n for n in self.nodes if n.alive()]

    def start(self, timeout: float = 90) -> KafkaCluster:
        """Format every node (in parallel: one JVM each), start them all, and wait until each
        lists every broker as live."""
        with concurrent.futures.ThreadPoolExecutor(self.size) as pool:
            list(pool.map(KafkaNode.format, self.nodes))
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready(timeout, self.node_ids)
        return self

    def kill(self, node_id: int) -> None:
        self.node(node_id).kill()

    def stop_node(self, node_id: int) -> None:
        self.node(node_id).stop()

    def restart(self, node_id: int, timeout: float = 60) -> KafkaNode:
        return self.node(node_id).restart(timeout)

    def partition(self, topic: str, partition: int) -> PartitionState | None:
        """``topic``'s ``partition`` as the first live node that answers sees it."""
        for node in self.live_nodes():
            with contextlib.suppress(OSError):
                return node.metadata((topic,)).topics.get(topic, {}).get(partition)
        return None

    def leader(self, topic: str, partition: int) -> KafkaNode | None:
        """The node leading ``topic``'s ``partition`` (None while it has no leader)."""
        state = self.partition(topic, partition)
        if state is None or state.leader not in self.node_ids:
            return None
        return self.node(state.leader)

    def stop(self) -> None:
        """Stop every node; the ones that outlast a controlled shutdown are killed."""
        for node in self.nodes:
            if node.alive() and len(self.live_nodes()) <= self.size // 2:
                # Without a quorum no controlled shutdown can finish: do not wait for it.
                node.kill()
            node.stop()

    def __enter__(self) -> KafkaCluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
