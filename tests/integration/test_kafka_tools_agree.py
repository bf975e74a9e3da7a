"""What we read from Kafka, cross-checked by Kafka's own consumer-groups tool and by kcat."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

from app.adapters.kafka_lag import LagReader
from app.local.kafka_jars import run_tool
from tests.integration.test_lag_reader import commit, produce
from tests.lag import new_topic


def tool_lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """LAG per partition of ``topic`` as ``kafka-consumer-groups --describe`` prints it."""
    out = run_tool(
        "kafka-consumer-groups", "--bootstrap-server", bootstrap, "--describe", "--group", group
    )
    lines = [line.split() for line in out.splitlines() if line.strip()]
    header = next(row for row in lines if "PARTITION" in row and "LAG" in row)
    col = {name: i for i, name in enumerate(header)}
    return {
        int(row[col["PARTITION"]]): int(row[col["LAG"]])
        for row in lines
        if row is not header and len(row) >= len(header) and row[col["TOPIC"]] == topic
    }


async def test_our_lag_equals_kafka_consumer_groups(kafka_bootstrap: str) -> None:
    topic, group = await new_topic(kafka_bootstrap, 3), "g-tools"
    await produce(kafka_bootstrap, topic, {0: 7, 1: 3, 2: 5})
    await commit(kafka_bootstrap, topic, group, {0: 2, 1: 3, 2: 1})
    async with LagReader(kafka_bootstrap, timeout_s=5) as reader:
        ours = (await reader.read(topic, group)).lag_per_partition
    theirs = await asyncio.to_thread(tool_lag, kafka_bootstrap, group, topic)
    assert ours == (5, 0, 4)
    assert theirs == dict(enumerate(ours))


def test_kcat_reads_our_topic(kafka_bootstrap: str) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed: run `make system-deps`"
    topic = asyncio.run(new_topic(kafka_bootstrap, 2))
    asyncio.run(produce(kafka_bootstrap, topic, {0: 4, 1: 2}))
    done = subprocess.run(
        [kcat, "-b", kafka_bootstrap, "-t", topic, "-C", "-e", "-q", "-f", "%p %o\\n"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = sorted(tuple(map(int, line.split())) for line in done.stdout.splitlines())
    assert seen == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
