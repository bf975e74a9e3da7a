"""The issue worker's loop: poll, one lane per partition's batch, commit after the DB, rebalances.

Each partition's batch runs in its own *lane* (a task) while the loop keeps polling: the partition
stays paused until its batch is committed, and the poll keeps this member in the group however
long a lane waits. On a rebalance, the revoked partitions' lanes finish and commit before the
partitions go; a lane that is waiting out a fault gives up at once (redelivery changes nothing).
What a lane does with its batch (issue, isolate a failing message, dead-letter, settle) is
app/consumer/batch.py; how it waits out a fault, app/consumer/retry.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from app.adapters.redis_gate import RedisGate
from app.config import Settings
from app.consumer.batch import BatchHandler, Record
from app.consumer.retry import Abandoned, InfrastructureRetry, Lane
from app.observability import metrics
from app.waits import until_set

log = logging.getLogger(__name__)
_REVOKE_GRACE_S = 15.0  # how long a rebalance waits for a healthy lane to finish its batch
# COUPON_BATCH_INTERVAL_MS's default (app/config.py, where the trade-off is measured and told).
BATCH_INTERVAL_S = Settings.model_fields["batch_interval_ms"].default / 1000


class _Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: IssueWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.hand_back(revoked)
        log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        metrics.CONSUMER_REBALANCES.inc()
        metrics.CONSUMER_ASSIGNED_PARTITIONS.set(len(assigned))
        self._worker.joined.set()
        log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))


class IssueWorker:
    """One consumer-group member issuing coupons."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        pool: asyncpg.Pool,
        gate: RedisGate,
        *,
        topic: str,
        dlq_topic: str,
        batch_max: int,
        max_attempts: int,
        retry_backoff_s: float,
        batch_interval_s: float = BATCH_INTERVAL_S,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._batch_max = batch_max
        self._batch_interval_s = batch_interval_s
        self._stop = asyncio.Event()
        self._retry = InfrastructureRetry(self._stop, retry_backoff_s)
        self._batches = BatchHandler(producer, pool, gate, self._retry, dlq_topic, max_attempts)
        self._lanes: dict[TopicPartition, Lane] = {}
        self.joined = asyncio.Event()

    def stop(self) -> None:
        """Ask the loop to finish the batches in progress, commit them and return."""
        self._stop.set()

    @property
    def stalled(self) -> bool:
        """Whether a partition is waiting out an infrastructure fault right now."""
        return self._retry.any_stalled

    async def run(self) -> None:
        """Poll and start lanes until :meth:`stop`; then finish the lanes and return."""
        self._consumer.subscribe([self._topic], listener=_Rebalances(self))

        async def poll() -> dict[TopicPartition, list[Record]]:
            batches: dict[TopicPartition, list[Record]] = await self._consumer.getmany(
                timeout_ms=200, max_records=self._batch_max
            )
            return batches

        while not self._stop.is_set():
            try:  # the loop must outlive any broker trouble: the poll waits it out
                batches = await self._retry.call(None, poll)
            except Abandoned:
                break
            for tp, records in batches.items():
                if records:
                    self._start_lane(tp, records)
        await self._finish_lanes(set(self._lanes))

    # --- lanes ------------------------------------------------------------------------------------

    def _start_lane(self, tp: TopicPartition, records: Sequence[Record]) -> None:
        self._consumer.pause(tp)
        lane = Lane(tp, records[0].offset)
        previous = self._lanes.get(tp)
        lane.task = asyncio.create_task(self._run_lane(lane, records, previous))
        self._lanes[tp] = lane

    async def _run_lane(self, lane: Lane, records: Sequence[Record], previous: Lane | None) -> None:
        if previous is not None and previous.task is not None:
            await asyncio.wait([previous.task])  # one batch per partition at a time, in order
        started = asyncio.get_running_loop().time()
        try:
            await self._batches.handle(lane, records)
            await self._commit(lane.tp, records[-1].offset + 1)
            if len(records) < self._batch_max:
                await self._gather_next(started)
        except Abandoned:
            log.info("partition %d: batch left uncommitted (redelivered)", lane.tp.partition)
        except Exception:
            log.exception(
                "partition %d: batch failed unexpectedly; re-reading it", lane.tp.partition
            )
            self._rewind(lane)
        finally:
            if self._lanes.get(lane.tp) is lane:
                del self._lanes[lane.tp]
                self._resume(lane.tp)

    async def _gather_next(self, started: float) -> None:
        """Keep the partition paused until the batch interval after its batch began (less on stop)."""
        remaining = started + self._batch_interval_s - asyncio.get_running_loop().time()
        if remaining > 0 and not self._stop.is_set():
            await until_set(self._stop, remaining)

    async def hand_back(self, revoked: set[TopicPartition]) -> None:
        """Before partitions go: let their batches finish and commit; stalled ones give up."""
        busy = sorted(tp.partition for tp in revoked if tp in self._lanes)
        if busy:
            log.warning("rebalance: finishing the batches in flight on partitions %s first", busy)
        await self._finish_lanes(revoked, grace_s=_REVOKE_GRACE_S)

    async def _finish_lanes(self, tps: set[TopicPartition], grace_s: float | None = None) -> None:
        lanes = [lane for tp, lane in list(self._lanes.items()) if tp in tps]
        for lane in lanes:
            if self._retry.is_stalled(lane):
                lane.abandon.set()
        tasks = [lane.task for lane in lanes if lane.task is not None]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace_s)
        if late:
            log.warning("%d batch(es) did not finish in %.0fs; abandoning them", len(late), grace_s)
            for lane in lanes:
                lane.abandon.set()

    def _rewind(self, lane: Lane) -> None:
        try:
            self._consumer.seek(lane.tp, lane.first_offset)
        except IllegalStateError:
            pass  # no longer ours: the new owner starts from the committed offset

    def _resume(self, tp: TopicPartition) -> None:
        if tp in self._consumer.assignment():
            try:
                self._consumer.resume(tp)
            except IllegalStateError:
                pass  # revoked meanwhile

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        """Commit one partition's offset; a failed commit only means redelivery, never a crash."""
        if tp not in self._consumer.assignment():
            log.info("partition %d is no longer ours; not committing (redelivered)", tp.partition)
            return
        try:
            await self._consumer.commit({tp: offset})
        except (KafkaError, IllegalStateError) as exc:
            metrics.CONSUMER_COMMIT_FAILURES.inc()
            log.warning("offset commit failed, messages will be redelivered: %r", exc)
