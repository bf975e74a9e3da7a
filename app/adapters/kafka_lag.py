"""Consumer-group lag, read from the broker without joining the group.

Per partition: the log start, the log end (high watermark) and the group's committed offset.
:class:`LagReader` keeps its connections between reads (the reconciler opens one per pass);
:class:`ReconnectingLagReader` is what long-lived pollers hold (the operator, the dev-mode scaler,
the lag exporter): it connects on first use and again after a failed read. :func:`read_lag` is a
one-off read (verify).

Broker notes (tansu, our test broker, and why the reads look the way they do):
- ListOffsets "latest" under-reports the end of a partition written with batched produces, so the
  log end is the high watermark carried by a Fetch response: assign the partitions to a group-less
  consumer, seek to the end, and fetch once; ``highwater()`` is then fresh (a new assignment starts
  with no highwater, so any value seen is from this read).
- The admin client's OffsetFetch (list_consumer_group_offsets) fails to decode against tansu, so
  committed offsets come from a consumer created with the group id that never subscribes (it never
  joins the group, so reading lag does not rebalance the real consumers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

T = TypeVar("T")


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
        self._groups: dict[str, AIOKafkaConsumer] = {}
        self._admin: AIOKafkaAdminClient | None = None
        # One read at a time: reads reassign the shared offsets consumer.
        self._lock = asyncio.Lock()

    @property
    def bootstrap(self) -> str:
        return self._bootstrap

    async def start(self) -> LagReader:
        """Connect to the broker; raises :class:`LagReadError` when it cannot be reached."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            # A read only wants the fetch response's high watermark, not the records.
            max_partition_fetch_bytes=1,
            fetch_max_wait_ms=50,
            request_timeout_ms=int(self._timeout_s * 1000),
            metadata_max_age_ms=30_000,  # notice added partitions within a minute
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
        clients: list[Any] = [self._offsets, self._admin, *self._groups.values()]
        self._offsets, self._admin, self._groups = None, None, {}
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
            ends = await self._guard(self._log_ends(self._offsets, tps))
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

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        """The topic's partitions, asked every read so added partitions count at once."""
        admin = await self._admin_client()
        # All topics, not [topic]: naming a topic in a metadata request may auto-create it (tansu
        # does), and a lag reader must not create a topic from a typo in a spec.
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

    async def _log_ends(
        self, consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """High watermarks from one fetch (see the module docstring for why not ListOffsets)."""
        consumer.assign(list(tps))  # a fresh assignment has no highwater yet
        try:
            await consumer.seek_to_end(*tps)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._timeout_s
            while any(consumer.highwater(tp) is None for tp in tps):
                if loop.time() > deadline:
                    raise LagReadError("no fetch response with a high watermark in time")
                await consumer.getmany(*tps, timeout_ms=50, max_records=1)
            return {tp: int(consumer.highwater(tp)) for tp in tps}
        finally:
            consumer.unsubscribe()  # stop background fetching until the next read

    async def _committed(
        self, group: str, tps: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        consumer = self._groups.get(group)
        if consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=group,
                enable_auto_commit=False,  # it must never commit: it only reads
                request_timeout_ms=int(self._timeout_s * 1000),
            )
            await consumer.start()  # never subscribed: it never joins the group
            self._groups[group] = consumer
        values = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
        return dict(zip(tps, values, strict=True))

    async def _members(self, group: str) -> int | None:
        """Members of the group, or None when DescribeGroups is unavailable (best effort)."""
        try:
            admin = await asyncio.wait_for(self._admin_client(), self._timeout_s)
            responses = await asyncio.wait_for(
                admin.describe_consumer_groups([group]), self._timeout_s
            )
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
            return await asyncio.wait_for(awaitable, self._timeout_s)
        except LagReadError:
            raise
        except (KafkaError, OSError, TimeoutError) as exc:
            raise LagReadError(f"{type(exc).__name__}: {exc}") from exc


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


async def read_lag(bootstrap: str, topic: str, group: str, timeout_s: float = 10.0) -> LagSnapshot:
    """One-off read of ``group``'s lag on ``topic`` (opens and closes its connections)."""
    reader = LagReader(bootstrap, timeout_s)
    try:
        await reader.start()
        return await reader.read(topic, group)
    finally:
        await reader.stop()
