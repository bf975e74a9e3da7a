"""Consumer-group lag, read from the broker without joining the group.

Per partition: the log start, the log end (high watermark) and the group's committed offset;
and, for the reconciler, the topic's id (app/adapters/kafka_metadata.py).
:class:`LagReader` keeps its connections between reads (the reconciler opens one per pass);
:class:`ReconnectingLagReader` is what long-lived pollers hold (the operator, the dev-mode scaler,
the lag exporter): it connects on first use and again after a failed read. :func:`read_lag` is a
one-off read (verify). :class:`OldestRecordProbe` (the lag exporter) reads the first unconsumed
record of each lagging partition, for how long it has waited.

Each read asks the broker three things: the topic's partitions (a metadata request, every read, so
added partitions count at once), the log start and end of each (ListOffsets; the end is the high
watermark, what a consumer can read), and the group's committed offsets (OffsetFetch, through the
admin client: nothing here ever joins the group, so reading lag never rebalances the consumers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorForGroupError,
)
from aiokafka.structs import OffsetAndMetadata
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from app.adapters.kafka_metadata import topic_ids
from app.waits import within

T = TypeVar("T")
# Answers that mean "ask again in a moment": the group's coordinator is being elected or loaded.
_COORDINATOR_MOVING = (
    GroupCoordinatorNotAvailableError,
    CoordinatorLoadInProgressError,
    NotCoordinatorForGroupError,
)


class LagReadError(Exception):
    """The broker could not be asked (unreachable, timed out, or answered with an error)."""


class TopicNotFound(LagReadError):
    """The topic does not exist (or has no partitions)."""


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """Offsets of one partition, as seen by one consumer group."""

    partition: int
    log_start: int  # first offset still in the log
    log_end: int  # high watermark: the offset the next message will get
    committed: int | None  # None: the group never committed on this partition

    @property
    def position(self) -> int:
        """Where the group resumes: its commit, or the log start (nothing older exists)."""
        return self.log_start if self.committed is None else max(self.committed, self.log_start)

    @property
    def lag(self) -> int:
        """Messages the group still has to consume on this partition."""
        return max(0, self.log_end - self.position)


@dataclass(frozen=True, slots=True)
class LagSnapshot:
    """The lag of one group on one topic at one moment."""

    topic: str
    group: str
    partitions: tuple[PartitionLag, ...]  # ordered by partition id
    members: int | None  # group members (DescribeGroups); None when the broker would not say
    taken_at: float  # time.time() when read

    @property
    def partition_count(self) -> int:
        return len(self.partitions)

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def lag_per_partition(self) -> tuple[int, ...]:
        return tuple(p.lag for p in self.partitions)

    @property
    def consumed_total(self) -> int:
        """Sum of the group's positions: its delta between two snapshots is what was consumed."""
        return sum(p.position for p in self.partitions)

    @property
    def produced_total(self) -> int:
        """Sum of the log ends: its delta between two snapshots is what was produced."""
        return sum(p.log_end for p in self.partitions)

    @property
    def log_end_per_partition(self) -> tuple[int, ...]:
        """Each partition's log end: its delta between two snapshots is what it received."""
        return tuple(p.log_end for p in self.partitions)


class LagReader:
    """Reads group lag over connections kept open between reads (one reader per bootstrap)."""

    def __init__(self, bootstrap: str, timeout_s: float = 10.0) -> None:
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._offsets: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()  # one read at a time over the shared connections

    @property
    def bootstrap(self) -> str:
        return self._bootstrap

    async def start(self) -> LagReader:
        """Connect to the broker; raises :class:`LagReadError` when it cannot be reached."""
        consumer = AIOKafkaConsumer(  # group-less: only asks for offsets, never fetches records
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            request_timeout_ms=int(self._timeout_s * 1000),
        )
        try:
            await self._guard(consumer.start())
        except BaseException:
            await consumer.stop()  # a failed start leaves sockets and tasks behind otherwise
            raise
        self._offsets = consumer
        return self

    async def stop(self) -> None:
        """Close every connection (safe to call twice, or after a failed start)."""
        clients: list[Any] = [self._offsets, self._admin]
        self._offsets, self._admin = None, None
        for client in clients:
            if client is None:
                continue
            try:
                if isinstance(client, AIOKafkaConsumer):
                    await client.stop()
                else:
                    await client.close()
            except Exception:  # closing a broken connection must not mask the original fault
                pass

    async def __aenter__(self) -> LagReader:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def read(self, topic: str, group: str) -> LagSnapshot:
        """The lag of ``group`` on ``topic`` now; works whether or not any consumer runs."""
        if self._offsets is None:
            raise LagReadError("LagReader.read() before start()")
        async with self._lock:
            tps = await self._guard(self._partitions(topic))
            ends = await self._guard(self._offsets.end_offsets(tps))
            starts = await self._guard(self._offsets.beginning_offsets(tps))
            committed = await self._guard(self._committed(group, tps))
        members = await self._members(group)
        return LagSnapshot(
            topic=topic,
            group=group,
            partitions=tuple(
                PartitionLag(tp.partition, starts[tp], ends[tp], committed[tp]) for tp in tps
            ),
            members=members,
            taken_at=time.time(),
        )

    async def topic_id(self, topic: str) -> UUID | None:
        """The topic's id (another id under the same name: the topic was created again); None
        when the broker does not say."""
        if self._offsets is None:
            raise LagReadError("LagReader.topic_id() before start()")
        async with self._lock:
            ids = await self._guard(topic_ids(await self._guard(self._admin_client())))
        return ids.get(topic)

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        """The topic's partitions, asked every read so added partitions count at once."""
        admin = await self._admin_client()
        # All topics, not [topic]: naming a topic in a metadata request may auto-create it (a
        # broker with auto.create.topics.enable), and a typo in a spec must not create a topic.
        for meta in await admin.describe_topics(None):
            if meta["topic"] == topic and not meta["error_code"] and meta["partitions"]:
                ids = sorted(p["partition"] for p in meta["partitions"])
                return [TopicPartition(topic, p) for p in ids]
        raise TopicNotFound(f"topic {topic!r} not found on {self._bootstrap}")

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._bootstrap,
                request_timeout_ms=int(self._timeout_s * 1000),
            )
            await admin.start()
            self._admin = admin
        return self._admin

    async def _committed(
        self, group: str, tps: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """The group's committed offset per partition (None: never committed there)."""
        admin = await self._admin_client()
        # A fresh broker (or one just restarted) elects the group's coordinator on first ask.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(_COORDINATOR_MOVING),
            wait=wait_fixed(0.1),
            stop=stop_after_delay(self._timeout_s),
            reraise=True,
        ):
            with attempt:
                found = await admin.list_consumer_group_offsets(group, partitions=list(tps))
        return {tp: _offset(found.get(tp)) for tp in tps}

    async def _members(self, group: str) -> int | None:
        """Members of the group, or None when DescribeGroups is unavailable (best effort)."""
        try:
            admin = await within(self._admin_client(), self._timeout_s)
            responses = await within(admin.describe_consumer_groups([group]), self._timeout_s)
            for response in responses:
                for error_code, name, _state, _ptype, _proto, members in response.groups:
                    if name == group and error_code == 0:
                        return len(members)
        except (KafkaError, OSError, TimeoutError, ValueError):
            return None
        return None

    async def _guard(self, awaitable: Awaitable[T]) -> T:
        """Await with the reader's timeout, turning broker faults into :class:`LagReadError`."""
        try:
            return await within(awaitable, self._timeout_s)
        except LagReadError:
            raise
        except (KafkaError, OSError, TimeoutError) as exc:
            raise LagReadError(f"{type(exc).__name__}: {exc}") from exc


def _offset(committed: OffsetAndMetadata | None) -> int | None:
    """OffsetFetch answers -1 for a partition the group never committed on."""
    if committed is None or committed.offset < 0:
        return None
    return int(committed.offset)


class ReconnectingLagReader:
    """A :class:`LagReader` that connects on first use and afresh after a failed read.

    A broker restart or a network fault fails the reads in flight with :class:`LagReadError`; the
    failed connections are closed and the next read connects again, so a poller recovers on its
    own. :class:`TopicNotFound` keeps the connections: the broker answered, and other callers (the
    operator shares one reader per bootstrap) may be reading over them.
    """

    def __init__(self, bootstrap: str, timeout_s: float = 10.0) -> None:
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._reader: LagReader | None = None
        self._lock = asyncio.Lock()  # one connect at a time, and no drop racing it

    @property
    def bootstrap(self) -> str:
        return self._bootstrap

    async def read(self, topic: str, group: str) -> LagSnapshot:
        """The lag of ``group`` on ``topic``; raises :class:`LagReadError` when it is unknown."""
        reader = await self._connected()
        try:
            return await reader.read(topic, group)
        except TopicNotFound:
            raise
        except LagReadError:
            await self._drop(reader)
            raise

    async def close(self) -> None:
        """Close the connections (safe to call twice); a later read connects again."""
        async with self._lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()

    async def _connected(self) -> LagReader:
        async with self._lock:
            if self._reader is None:
                self._reader = await LagReader(self._bootstrap, self._timeout_s).start()
            return self._reader

    async def _drop(self, reader: LagReader) -> None:
        """Forget ``reader`` unless a concurrent failure already replaced it, then close it."""
        async with self._lock:
            if self._reader is not reader:
                return
            self._reader = None
        await reader.stop()


class OldestRecordProbe:
    """Reads the first unconsumed record of each lagging partition, for its timestamp."""

    def __init__(self, bootstrap: str, fetch_timeout_s: float = 2.0) -> None:
        self._bootstrap = bootstrap
        self._fetch_timeout_s = fetch_timeout_s
        self._reader: AIOKafkaConsumer | None = None

    async def _consumer(self) -> AIOKafkaConsumer:
        if self._reader is None:
            # No group: it only reads single records, it must never join or commit.
            reader = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # the record is gone (retention): the oldest left
                max_partition_fetch_bytes=64 * 1024,
                fetch_max_wait_ms=100,
            )
            await reader.start()
            self._reader = reader
        return self._reader

    async def oldest_ages(
        self, topic: str, partitions: Sequence[PartitionLag], wall_now: float
    ) -> dict[int, float]:
        """Seconds since the first unconsumed record of each lagging partition was produced."""
        lagging = {p.partition: p for p in partitions if p.lag > 0}
        if not lagging:
            return {}
        reader = await self._consumer()
        tps = [TopicPartition(topic, n) for n in sorted(lagging)]
        reader.assign(tps)
        for tp in tps:
            reader.seek(tp, lagging[tp.partition].position)
        stamps: dict[int, int] = {}
        deadline = time.monotonic() + self._fetch_timeout_s
        while len(stamps) < len(tps) and time.monotonic() < deadline:
            waiting = [tp for tp in tps if tp.partition not in stamps]
            batch = await reader.getmany(*waiting, timeout_ms=200)
            for tp, records in batch.items():
                if records and records[0].timestamp is not None and records[0].timestamp >= 0:
                    stamps.setdefault(tp.partition, records[0].timestamp)
        return {n: max(0.0, wall_now - ms / 1000) for n, ms in stamps.items()}

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.stop()


async def read_lag(bootstrap: str, topic: str, group: str, timeout_s: float = 10.0) -> LagSnapshot:
    """One-off read of ``group``'s lag on ``topic`` (opens and closes its connections)."""
    reader = LagReader(bootstrap, timeout_s)
    try:
        await reader.start()
        return await reader.read(topic, group)
    finally:
        await reader.stop()
