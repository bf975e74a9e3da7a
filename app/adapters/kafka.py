"""Kafka: topic administration, the request publisher, consumers and the dead-letter topic."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    InvalidTimestampError,
    KafkaError,
    OutOfOrderSequenceNumber,
    TopicAlreadyExistsError,
    UnknownProducerId,
)
from aiokafka.partitioner import DefaultPartitioner

from app.config import Settings
from app.domain.codec import IssueRequest, encode
from app.waits import within

log = logging.getLogger(__name__)
_UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION


class BrokerUnavailable(Exception):
    """The message never left this process (no broker to send it to): nothing was queued."""


class PublishUnconfirmed(Exception):
    """The message was handed to the broker but no ack came in time: it may still be queued."""


class TopicProblem(Exception):
    """A topic exists but does not match what the service needs."""


def wanted_topics(settings: Settings) -> list[TopicSpec]:
    """The request topic and its dead-letter topic, as the settings ask for them."""
    rf, isr = settings.replication_factor, settings.min_insync_replicas
    return [
        TopicSpec(
            settings.topic,
            settings.partitions,
            rf,
            request_topic_configs(isr, settings.delivery_timeout_ms),
        ),
        TopicSpec(settings.dlq_topic, settings.partitions, rf, replicated_topic_configs(isr)),
    ]


@dataclass(frozen=True, slots=True)
class TopicReport:
    name: str
    partitions: int
    created: bool


def request_topic_configs(min_insync_replicas: int, delivery_timeout_ms: int) -> dict[str, str]:
    """The request topic's settings the guarantees rest on (docs/deploy.md says why each)."""
    return {
        **replicated_topic_configs(min_insync_replicas),
        # A record whose timestamp (the producer's send time) is older than this is refused, not
        # appended: a press delayed in a producer buffer or a stalled broker past the delivery
        # timeout never reaches the log, so the reconciler may settle it.
        "message.timestamp.type": "CreateTime",
        "message.timestamp.before.max.ms": str(delivery_timeout_ms),
    }


def replicated_topic_configs(min_insync_replicas: int) -> dict[str, str]:
    return {
        "min.insync.replicas": str(min_insync_replicas),
        # An out-of-date replica never becomes leader: acked records are never dropped for it.
        "unclean.leader.election.enable": "false",
    }


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]


async def ensure_topics(
    bootstrap: str, wanted: Sequence[TopicSpec], timeout_s: float = 30
) -> list[TopicReport]:
    """Create missing topics; verify existing ones have at least the wanted partitions and the
    settings the guarantees need (an existing topic is not changed: its owner is told how)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    await within(admin.start(), timeout_s)
    by_name = {spec.name: spec for spec in wanted}
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                spec.name,
                spec.partitions,
                spec.replication_factor,
                topic_configs=dict(spec.configs),
            )
            for spec in wanted
            if spec.name not in existing
        ]
        created = set()
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process won the race; verified below
            created = {t.name for t in missing}
        reports = []
        for meta in await _described(admin, list(by_name), created, timeout_s):
            name, have = meta["topic"], len(meta["partitions"])
            if meta["error_code"] or have == 0:
                raise TopicProblem(f"topic {name!r}: broker error code {meta['error_code']}")
            if have < by_name[name].partitions:
                raise TopicProblem(
                    f"topic {name!r} has {have} partitions, configuration asks for"
                    f" {by_name[name].partitions}: add partitions with kafka-topics --alter, or set"
                    " COUPON_PARTITIONS"
                )
            reports.append(TopicReport(name, have, name in created))
        await _verify_configs(admin, [by_name[r.name] for r in reports if not r.created])
        return reports
    finally:
        await admin.close()


async def _described(
    admin: AIOKafkaAdminClient, names: list[str], created: set[str], timeout_s: float
) -> list[dict[str, Any]]:
    """The topics' metadata, once the ones just created are known to the broker answering (a
    new topic reaches each broker's metadata a moment after CreateTopics returns)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(names)
        pending = [
            m
            for m in described
            if m["topic"] in created and (m["error_code"] == _UNKNOWN_TOPIC or not m["partitions"])
        ]
        if not pending or asyncio.get_running_loop().time() > deadline:
            return described
        await asyncio.sleep(0.1)


async def _verify_configs(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> None:
    """An existing topic must carry the settings the guarantees rest on, as created ones do."""
    if not specs:
        return
    resources = [ConfigResource(ConfigResourceType.TOPIC, spec.name) for spec in specs]
    responses = await admin.describe_configs(resources)
    actual: dict[str, dict[str, str | None]] = {}
    for response in responses:
        for _code, _message, _type, name, entries in response.resources:
            actual[name] = {entry[0]: entry[1] for entry in entries}
    for spec in specs:
        have = actual.get(spec.name, {})
        wrong = {k: v for k, v in spec.configs.items() if have.get(k) != v}
        if wrong:
            fix = ",".join(f"{k}={v}" for k, v in wrong.items())
            found = ", ".join(f"{k}={have.get(k)}" for k in wrong)
            raise TopicProblem(
                f"topic {spec.name!r} has {found}: set kafka-configs --alter --entity-type topics"
                f" --entity-name {spec.name} --add-config {fix}"
            )


@asynccontextmanager
async def running(*clients: AIOKafkaConsumer | AIOKafkaProducer) -> AsyncIterator[None]:
    """Start the clients in order and always stop them, a failed start included (aiokafka leaves
    a client that failed to bootstrap open, and complains about it at exit)."""
    try:
        for client in clients:
            await client.start()
        yield
    finally:
        for client in reversed(clients):
            await client.stop()


def make_producer(
    bootstrap: str, linger_ms: int, timeout_ms: int, max_batch_bytes: int = 16384
) -> AIOKafkaProducer:
    """An idempotent producer that waits for all in-sync replicas: a retried send is never
    appended twice, and an ack means min.insync.replicas brokers hold the press.

    ``max_batch_bytes`` bounds one partition's batch: aiokafka sends one batch per partition at
    a time, and a send that finds the batch full waits for it to drain, so a sale's single hot
    partition needs room for every press in flight."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        request_timeout_ms=timeout_ms,
        max_batch_size=max_batch_bytes,
    )


# The broker refused the record: it is not in the log (safe to undo). An idempotent producer
# whose record was refused is left with a sequence gap the broker then refuses every later
# record for (OutOfOrderSequenceNumber): the publisher replaces it (a new producer id).
_REFUSED = (InvalidTimestampError, OutOfOrderSequenceNumber, UnknownProducerId)


class Publisher:
    """Publishes issue requests and awaits the broker's ack for each one.

    ``renew`` makes and starts a replacement producer: after the broker refused a record (one
    older than the delivery timeout, say) the idempotent producer is unusable, and is replaced
    on the spot rather than failing every later press."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        timeout_s: float,
        renew: Callable[[], Awaitable[AIOKafkaProducer]] | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s
        self._renew = renew
        self._renewing: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        return self._producer

    async def partition_for_coupon(self, key: bytes, timeout_s: float = 2.0) -> int | None:
        """The partition a new coupon's presses will all go to: its key's hash over the topic's
        partitions now (None when the broker cannot say in time: presses then hash per send).

        Fixed at creation, so partitions added later never split one coupon's presses."""
        try:
            partitions = await within(self._producer.partitions_for(self._topic), timeout_s)
        except (KafkaError, TimeoutError) as exc:
            log.warning("partition count of %s unknown, coupon not pinned: %r", self._topic, exc)
            return None
        return partition_for(key, len(partitions)) if partitions else None

    async def publish(self, request: IssueRequest, partition: int | None = None) -> int:
        """Send to ``partition`` (None: the key's hash) and wait for the ack; returns the partition.

        Raises BrokerUnavailable when the message never left or the broker refused it (safe to
        undo the reservation), and PublishUnconfirmed when it was sent but not acknowledged in
        time: a stalled broker can still append it later, so nobody may claim it was rolled back.
        """
        sent = None
        producer = self._producer
        loop = self._loop
        if loop is None:  # the loop the producer runs on; looked up once (see _Deadline)
            loop = self._loop = asyncio.get_running_loop()
        try:
            with _Deadline(loop, loop.time() + self._timeout_s):  # one timer for both steps
                sent = await producer.send(
                    self._topic, encode(request), key=request.key(), partition=partition
                )
                acked = loop.create_future()
                sent.add_done_callback(functools.partial(self._settled, producer, acked))
                meta = await acked
        except _REFUSED as exc:
            raise BrokerUnavailable(f"refused by the broker: {exc!r}") from exc
        except (KafkaError, TimeoutError) as exc:
            if sent is None:
                raise BrokerUnavailable(f"broker unreachable: {exc!r}") from exc
            raise PublishUnconfirmed(f"no ack from the broker: {exc!r}") from exc
        return int(meta.partition)

    def _settled(
        self, producer: AIOKafkaProducer, acked: asyncio.Future[Any], sent: asyncio.Future[Any]
    ) -> None:
        """Hand the broker's answer to the press awaiting ``acked`` (as ``asyncio.shield`` would:
        a press that stops waiting cancels ``acked``, never the send), and retire the producer
        on a refusal, even one nobody waits for any more."""
        if sent.cancelled():
            acked.cancel()
            return
        error = sent.exception()  # read, so an answer nobody waits for is not logged as lost
        if not acked.done():
            if error is None:
                acked.set_result(sent.result())
            else:
                acked.set_exception(error)
        if not isinstance(error, _REFUSED):
            return
        if producer is self._producer and self._renew is not None and self._renewing is None:
            self._renewing = asyncio.get_running_loop().create_task(self._replace(producer))

    async def _replace(self, old: AIOKafkaProducer) -> None:
        assert self._renew is not None
        try:
            self._producer = await self._renew()
            log.warning("the broker refused a record: replaced the producer (new producer id)")
        except Exception as exc:  # the next refusal tries again
            log.warning("could not replace the producer: %r", exc)
        finally:
            self._renewing = None
        if self._producer is not old:
            await old.stop()

    async def stop(self) -> None:
        if self._renewing is not None:
            await self._renewing
        await self._producer.stop()


class _Deadline:
    """``asyncio.timeout_at(when)`` for a loop already known, with the same semantics: at
    ``when`` the task is cancelled and leaving the block raises TimeoutError (a cancellation of
    the task from elsewhere stays a cancellation).

    Why not asyncio's own: Python 3.11's looks the running loop up three times per use (each
    look-up a getpid() system call, its fork check) and is an async context manager; this one
    costs 3.4 µs per publish against 4.8 µs, measured in process."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        task = asyncio.current_task(loop)  # given the loop: no look-up
        if task is None:
            raise RuntimeError("a deadline needs a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._expired = False
        self._handle = loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the producer's default partitioner picks for ``key`` (a coupon id)."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(key, every, every))


def coupon_partition(coupon_id: UUID, pinned: int | None, partitions: int) -> int:
    """Where a coupon's presses are: its pinned partition, else its key's hash over the
    topic's ``partitions`` now (coupons created before partitions were pinned)."""
    return pinned if pinned is not None else partition_for(str(coupon_id).encode(), partitions)


def make_consumer(bootstrap: str, group: str, max_records: int) -> AIOKafkaConsumer:
    """A group member with manual commits; starts from the earliest offset the first time."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_records,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        # Batches are committed to PostgreSQL in well under this; a stuck DB shows as lag.
        max_poll_interval_ms=300_000,
        # Partitions added to the topic are assigned within half a minute, not five: a coupon
        # created after the producer learnt of them is pinned to one.
        metadata_max_age_ms=30_000,
    )
