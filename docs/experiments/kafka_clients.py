"""The client CPU of an acknowledged Kafka message: aiokafka against confluent-kafka (librdkafka).

Each variant runs ``in_flight`` asyncio tasks that publish one message and await its ack, again
and again (acks=all, idempotence on, no linger, three partitions), as the API's presses do. The
process's CPU (librdkafka's threads included) and the broker's are read per message; the
variants alternate, round by round, on the same broker. See README.md for how to run it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import confluent_kafka
import uvloop
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

VALUE = json.dumps(  # the size and shape of an issue request
    {
        "v": 1,
        "couponId": str(uuid.uuid4()),
        "userId": "bench-u12345",
        "requestId": str(uuid.uuid4()),
        "requestedAt": "2026-12-08T00:00:00.123456+00:00",
    }
).encode()
KEY = str(uuid.uuid4()).encode()


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def broker_cpu() -> float:
    """CPU seconds of every Kafka JVM on this machine."""
    pids = subprocess.run(["pgrep", "-f", "kafka.Kafka"], capture_output=True, text=True).stdout
    total = 0.0
    for pid in pids.split():
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Librdkafka:
    """confluent-kafka on asyncio: a thread polls for delivery reports and hands each poll's
    reports to the loop in one call (one wake-up of the loop per poll, not per message)."""

    def __init__(self, bootstrap: str, topic: str, loop: asyncio.AbstractEventLoop) -> None:
        self.topic, self.loop = topic, loop
        self.producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
            }
        )
        self.reports: list[tuple[asyncio.Future[None], Any]] = []
        self.lock = threading.Lock()
        self.running = True
        self.poller = threading.Thread(target=self._poll, daemon=True)
        self.poller.start()

    def _poll(self) -> None:
        while self.running:
            self.producer.poll(0.05)  # runs the delivery callbacks, in this thread
            with self.lock:
                reports, self.reports = self.reports, []
            if reports:
                self.loop.call_soon_threadsafe(self._settle, reports)

    @staticmethod
    def _settle(reports: list[tuple[asyncio.Future[None], Any]]) -> None:
        for future, error in reports:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(RuntimeError(str(error)))

    async def publish(self, partition: int) -> None:
        future = self.loop.create_future()

        def delivered(error: Any, _message: Any) -> None:
            with self.lock:
                self.reports.append((future, error))

        self.producer.produce(self.topic, VALUE, KEY, partition=partition, on_delivery=delivered)
        await future

    def stop(self) -> None:
        self.running = False
        self.poller.join()
        self.producer.flush(5)


async def measure(bootstrap: str, messages: int, in_flight: int, rounds: int) -> None:
    topic = f"client-cpu-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 3, 1)])
    await admin.close()
    loop = asyncio.get_running_loop()
    aiokafka = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )
    await aiokafka.start()
    librdkafka = Librdkafka(bootstrap, topic, loop)

    async def aiokafka_publish(partition: int) -> None:
        await (await aiokafka.send(topic, VALUE, key=KEY, partition=partition))

    variants: dict[str, Callable[[int], Awaitable[None]]] = {
        "aiokafka": aiokafka_publish,
        "librdkafka": librdkafka.publish,
    }
    for publish in variants.values():  # warm-up, and the broker's JIT with it
        await asyncio.gather(*(publish(i % 3) for i in range(2000)))
    per_task = messages // in_flight
    for r in range(rounds):
        for name in list(variants)[:: 1 if r % 2 == 0 else -1]:
            publish = variants[name]

            async def task(n: int, publish: Callable[[int], Awaitable[None]] = publish) -> None:
                for _ in range(per_task):
                    await publish(n % 3)

            cpu, broker, started = process_cpu(), broker_cpu(), loop.time()
            await asyncio.gather(*(task(n) for n in range(in_flight)))
            sent = per_task * in_flight
            print(
                f"{name:10s} {in_flight:3d} in flight:"
                f" client {(process_cpu() - cpu) / sent * 1e6:5.1f} µs/message,"
                f" broker {(broker_cpu() - broker) / sent * 1e6:5.1f} µs/message,"
                f" {sent / (loop.time() - started):7,.0f} messages/s",
                flush=True,
            )
    librdkafka.stop()
    await aiokafka.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--messages", type=int, default=30_000, help="per variant and round")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    uvloop.run(measure(args.bootstrap, args.messages, args.in_flight, args.rounds))


if __name__ == "__main__":
    main()
