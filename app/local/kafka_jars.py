"""Apache Kafka's jars (fetched by ``make kafka``), the ``java`` to run them, and its CLI tools.

app/local/kafka.py starts broker nodes from these; ``run_tool`` runs one of the release's tools
(``kafka-topics``, ``kafka-storage``...) as the tarball's scripts would, without the scripts.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAFKA_MK = REPO / "mk" / "kafka.mk"
TOOLS_LOG4J2 = REPO / "mk" / "kafka" / "log4j2-tools.xml"

# The CLI tools live for a second or two: the C1 compiler alone starts them faster.
TOOL_JVM = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")

# The scripts of Kafka's release tarball, by the class each one runs.
TOOLS = {
    "kafka-storage": "kafka.tools.StorageTool",
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-configs": "org.apache.kafka.tools.ConfigCommand",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-metadata-quorum": "org.apache.kafka.tools.MetadataQuorumCommand",
}


class KafkaUnavailable(RuntimeError):
    """Apache Kafka cannot run here: the jars or java are missing."""


class KafkaToolFailed(RuntimeError):
    """One of Kafka's CLI tools exited non-zero."""


def kafka_version() -> str:
    """The pinned version: ``KAFKA_VERSION`` in mk/kafka.mk, the one place it is written."""
    found = re.search(r"^KAFKA_VERSION\s*:?=\s*(\S+)", KAFKA_MK.read_text(), re.MULTILINE)
    if found is None:
        raise KafkaUnavailable(f"no KAFKA_VERSION line in {KAFKA_MK}")
    return found.group(1)


def kafka_libs() -> Path:
    """The directory of Kafka's jars; raises ``KafkaUnavailable`` naming ``make kafka``."""
    home = REPO / ".tools" / f"kafka-{kafka_version()}"
    if not (home / ".fetched").exists():
        raise KafkaUnavailable(
            f"Apache Kafka {kafka_version()} is not in {home}/libs: run `make kafka` "
            "(it fetches the broker and its tools from Maven Central)"
        )
    return home / "libs"


def java() -> str:
    """The ``java`` to run Kafka with; raises ``KafkaUnavailable`` in one line if there is none."""
    found = shutil.which("java")
    if found is None:
        raise KafkaUnavailable("java is not on PATH: Apache Kafka needs Java 17+ (openjdk-17-jre)")
    return found


def class_archive() -> Path:
    """The JVM's class-data archive of Kafka's classes (AppCDS): with it a node starts in about
    two thirds of the time. The first node that stops cleanly writes it (see ``KafkaNode``)."""
    return kafka_libs().parent / "classes.jsa"


def java_command(jvm: tuple[str, ...], log4j2: Path, main: str, *extra: str) -> list[str]:
    classpath = f"{kafka_libs()}/*"  # the JVM expands the wildcard itself
    archive = class_archive()
    # A stale archive (other jars, another JDK) is only a warning: the JVM runs without it.
    shared = [f"-XX:SharedArchiveFile={archive}"] if archive.exists() else []
    log4j = f"-Dlog4j2.configurationFile={log4j2}"
    return [java(), *jvm, *shared, *extra, log4j, "-cp", classpath, main]


def run_tool(tool: str, *args: str, timeout: float = 60) -> str:
    """Run a Kafka CLI tool (a name in ``TOOLS`` or a class name) and return what it printed.

    Raises ``KafkaToolFailed`` with its stderr when it exits non-zero.
    """
    command = [*java_command(TOOL_JVM, TOOLS_LOG4J2, TOOLS.get(tool, tool)), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise KafkaToolFailed(f"{tool} {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


def new_cluster_id() -> str:
    """A random cluster id in Kafka's own text form (a UUID, URL-safe base64, unpadded).

    Like Kafka's ``Uuid.randomUuid()``, never one that starts with ``-``: a command-line
    tool would read such an id as an option (1 in 64 ids did, and failed a CI run).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text
