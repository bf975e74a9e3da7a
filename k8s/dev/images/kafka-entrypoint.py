#!/usr/local/bin/python3
"""apache/kafka's container interface on Debian's Java and our Kafka jars.

As that image does: every ``KAFKA_*`` variable but the JVM ones becomes a server property
(prefix dropped, lower case, ``___`` -> ``-``, ``__`` -> ``_``, ``_`` -> ``.``); without any, the
single-node KRaft defaults apply; the log dirs are formatted for ``CLUSTER_ID`` once; then the
broker runs in the foreground with ``KAFKA_HEAP_OPTS``/``KAFKA_OPTS``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

HOME = "/opt/kafka"
CONFIG = os.environ.get("KAFKA_CONFIG_DIR", f"{HOME}/config")
# Variables the start scripts read for the JVM, not the broker (kafka-run-class.sh's names).
JVM_VARIABLES = {
    "KAFKA_HEAP_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_DEBUG",
    "KAFKA_VERSION",
    "KAFKA_CONFIG_DIR",
}
# apache/kafka's config/server.properties for one combined node.
DEFAULTS = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.quorum.voters": "1@localhost:9093",
    "listeners": "PLAINTEXT://:9092,CONTROLLER://:9093",
    "advertised.listeners": "PLAINTEXT://localhost:9092",
    "controller.listener.names": "CONTROLLER",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "log.dirs": "/tmp/kraft-combined-logs",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
}
DEFAULT_CLUSTER_ID = "5L6g3nShT-eMCtK--X86sw"


def property_name(variable: str) -> str:
    key = variable.removeprefix("KAFKA_").lower()
    return re.sub(r"_+", lambda m: {1: ".", 2: "_", 3: "-"}.get(len(m.group()), m.group()), key)


def server_properties(env: dict[str, str]) -> dict[str, str]:
    given = {
        property_name(k): v
        for k, v in env.items()
        if k.startswith("KAFKA_") and k not in JVM_VARIABLES
    }
    return given or dict(DEFAULTS)


def java(main: str, *args: str, env: dict[str, str]) -> list[str]:
    heap = env.get("KAFKA_HEAP_OPTS", "-Xms512m -Xmx1g")
    performance = env.get("KAFKA_JVM_PERFORMANCE_OPTS", "-XX:+UseG1GC -XX:MaxGCPauseMillis=20")
    log4j = env.get("KAFKA_LOG4J_OPTS", f"-Dlog4j2.configurationFile={CONFIG}/log4j2.yaml")
    jvm = [*shlex.split(heap), *shlex.split(performance), *shlex.split(env.get("KAFKA_OPTS", ""))]
    return ["java", *jvm, "-Djava.awt.headless=true", log4j, "-cp", f"{HOME}/libs/*", main, *args]


def main() -> int:
    env = dict(os.environ)
    if len(sys.argv) > 1:  # a command instead of the broker, as `docker run apache/kafka CMD`
        os.execvp(sys.argv[1], sys.argv[1:])
    properties = server_properties(env)
    path = f"{CONFIG}/server.properties"
    with open(path, "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in sorted(properties.items()))
    cluster_id = env.get("CLUSTER_ID", DEFAULT_CLUSTER_ID)
    storage = ["format", f"--cluster-id={cluster_id}", "-c", path, "--ignore-formatted"]
    tool_env = {
        **env,
        "KAFKA_HEAP_OPTS": "-Xmx256m",
        "KAFKA_JVM_PERFORMANCE_OPTS": "-XX:+UseSerialGC",
    }
    subprocess.run(java("kafka.tools.StorageTool", *storage, env=tool_env), check=True)
    command = java("kafka.Kafka", path, env=env)
    os.execvp(command[0], command)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
