"""The issue worker: poll, issue each partition's batch in one transaction, commit after the DB.

Each partition's batch runs in its own *lane* (a task) while the loop keeps polling: the partition
stays paused until its batch is committed, and the poll keeps this member in the group however
long a lane waits. On a rebalance, the revoked partitions' lanes finish and commit before the
partitions go; a lane that is waiting out a fault gives up at once (redelivery changes nothing).

Faults are told apart by what they hit (app/consumer/faults.py for the error codes):
- the infrastructure's (database or broker away, read-only after a failover, a lock timeout, a
  missing table, ...): the lane waits with backoff for as long as it lasts and dead-letters
  nothing; the partition shows as stalled (metric, log, readiness);
- a message's own: a batch that fails for an unknown reason is first checked against a probe
  write. If the database refuses that too, it is the infrastructure's. If not, the batch is split
  in halves until the failing messages stand alone (a few transactions, not one per message); a
  message that fails alone while the database takes writes gets ``max_attempts`` tries in all,
  then goes to the dead-letter topic, and its reservation is given back with a FAILED outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeAlias, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from app.adapters import postgres
from app.adapters.redis_gate import RedisGate
from app.consumer.faults import is_infrastructure
from app.consumer.issue import issue_batch, processed_per_coupon
from app.domain.codec import DecodeError, IssueRequest, decode
from app.domain.dead_letter import DeadLetter, encode_dead_letter
from app.domain.decision import BatchPlan
from app.domain.outcomes import FailReason, IssueStatus
from app.domain.status import RecordedOutcome
from app.observability import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
Record: TypeAlias = ConsumerRecord[bytes, bytes]
_MAX_BACKOFF_S = 5.0
_REVOKE_GRACE_S = 15.0  # how long a rebalance waits for a healthy lane to finish its batch


class Abandoned(Exception):
    """The lane gave up (shutdown, or its partition was revoked): nothing more is committed."""


class _DatabaseRefusesWrites(Exception):
    """A whole batch failed and the probe write failed too: the infrastructure's fault."""


@dataclass(frozen=True, slots=True)
class _Item:
    record: Record
    request: IssueRequest


@dataclass(eq=False)
class _Lane:
    """One partition's batch in progress."""

    tp: TopicPartition
    first_offset: int
    abandon: asyncio.Event = field(default_factory=asyncio.Event)
    stalled: bool = False
    task: asyncio.Task[None] | None = None


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
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._pool = pool
        self._gate = gate
        self._topic = topic
        self._dlq_topic = dlq_topic
        self._batch_max = batch_max
        self._max_attempts = max_attempts
        self._backoff_s = max(retry_backoff_s, 0.01)
        self._stop = asyncio.Event()
        self._lanes: dict[TopicPartition, _Lane] = {}
        self.joined = asyncio.Event()

    def stop(self) -> None:
        """Ask the loop to finish the batches in progress, commit them and return."""
        self._stop.set()

    @property
    def stalled(self) -> bool:
        """Whether a partition is waiting out an infrastructure fault right now."""
        return any(lane.stalled for lane in self._lanes.values())

    async def run(self) -> None:
        self._consumer.subscribe([self._topic], listener=_Rebalances(self))
        while not self._stop.is_set():
            try:
                batches = await self._consumer.getmany(timeout_ms=200, max_records=self._batch_max)
            except KafkaError as exc:  # the loop must outlive any broker trouble
                log.warning("poll failed, polling again: %r", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), _MAX_BACKOFF_S)
                continue
            for tp, records in batches.items():
                if records:
                    self._start_lane(tp, records)
        await self._finish_lanes(set(self._lanes))

    # --- lanes ------------------------------------------------------------------------------------

    def _start_lane(self, tp: TopicPartition, records: Sequence[Record]) -> None:
        self._consumer.pause(tp)
        lane = _Lane(tp, records[0].offset)
        previous = self._lanes.get(tp)
        lane.task = asyncio.create_task(self._run_lane(lane, records, previous))
        self._lanes[tp] = lane

    async def _run_lane(
        self, lane: _Lane, records: Sequence[Record], previous: _Lane | None
    ) -> None:
        if previous is not None and previous.task is not None:
            await asyncio.wait([previous.task])  # one batch per partition at a time, in order
        try:
            await self._process(lane, records)
            await self._commit(lane.tp, records[-1].offset + 1)
        except Abandoned:
            log.info("partition %d: batch left uncommitted (redelivered)", lane.tp.partition)
        except Exception:
            log.exception(
                "partition %d: batch failed unexpectedly; re-reading it", lane.tp.partition
            )
            self._rewind(lane)
        finally:
            self._set_stalled(lane, False)
            if self._lanes.get(lane.tp) is lane:
                del self._lanes[lane.tp]
                self._resume(lane.tp)

    async def hand_back(self, revoked: set[TopicPartition]) -> None:
        """Before partitions go: let their batches finish and commit; stalled ones give up."""
        busy = sorted(tp.partition for tp in revoked if tp in self._lanes)
        if busy:
            log.warning("rebalance: finishing the batches in flight on partitions %s first", busy)
        await self._finish_lanes(revoked, grace_s=_REVOKE_GRACE_S)

    async def _finish_lanes(self, tps: set[TopicPartition], grace_s: float | None = None) -> None:
        lanes = [lane for tp, lane in list(self._lanes.items()) if tp in tps]
        for lane in lanes:
            if lane.stalled:
                lane.abandon.set()
        tasks = [lane.task for lane in lanes if lane.task is not None]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace_s)
        if late:
            log.warning("%d batch(es) did not finish in %.0fs; abandoning them", len(late), grace_s)
            for lane in lanes:
                lane.abandon.set()

    def _rewind(self, lane: _Lane) -> None:
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

    def _set_stalled(self, lane: _Lane, stalled: bool) -> None:
        lane.stalled = stalled
        metrics.CONSUMER_STALLED_PARTITIONS.set(sum(x.stalled for x in self._lanes.values()))

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

    # --- one batch ----------------------------------------------------------------------------------

    async def _process(self, lane: _Lane, records: Sequence[Record]) -> None:
        items: list[_Item] = []
        for record in records:
            try:
                items.append(_Item(record, decode(record.value)))
            except DecodeError as exc:
                await self._dead_letter(lane, record, None, f"undecodable message: {exc}", 1)
        if not items:
            return
        started = time.perf_counter()
        while True:
            try:
                failed = await self._issue_isolating(lane, items, whole_batch=True)
                break
            except _DatabaseRefusesWrites as exc:
                self._set_stalled(lane, True)
                metrics.CONSUMER_RETRIES.labels("transient").inc()
                log.warning(
                    "partition %d stalled: every message fails and the database refuses a probe"
                    " write (%r); waiting",
                    lane.tp.partition,
                    exc.__cause__,
                )
                await self._sleep(lane, _MAX_BACKOFF_S)
        self._set_stalled(lane, False)
        metrics.CONSUMER_BATCH_DURATION.observe(time.perf_counter() - started)
        metrics.CONSUMER_BATCH_SIZE.observe(len(items))
        if failed:
            await self._retry_alone(lane, failed)

    async def _issue_isolating(
        self, lane: _Lane, items: list[_Item], whole_batch: bool = False
    ) -> list[tuple[_Item, Exception]]:
        """Issue ``items``; on a data fault split in halves. Returns the items that failed alone."""
        try:
            plan = await self._attempt(lane, [i.request for i in items])
        except (Abandoned, _DatabaseRefusesWrites):
            raise
        except Exception as exc:
            metrics.CONSUMER_MESSAGES.labels("failed").inc()
            if whole_batch:
                await self._check_database_takes_writes(lane, exc)
                log.warning(
                    "batch of %d on partition %d failed (%r); isolating the failing messages",
                    len(items),
                    lane.tp.partition,
                    exc,
                )
            if len(items) == 1:
                return [(items[0], exc)]
            middle = len(items) // 2
            first = await self._issue_isolating(lane, items[:middle])
            return first + await self._issue_isolating(lane, items[middle:])
        await self._after_commit(plan)
        return []

    async def _check_database_takes_writes(self, lane: _Lane, fault: Exception) -> None:
        try:
            await self._with_retries(lane, lambda: postgres.probe_writes(self._pool))
        except (Abandoned, _DatabaseRefusesWrites):
            raise
        except Exception as exc:
            raise _DatabaseRefusesWrites from exc

    async def _retry_alone(self, lane: _Lane, failed: list[tuple[_Item, Exception]]) -> None:
        """Messages that failed alone get their remaining attempts in rounds, then the DLQ."""
        for attempt in range(2, self._max_attempts + 1):
            await self._sleep(lane, self._backoff_s * 2 ** (attempt - 2))
            still: list[tuple[_Item, Exception]] = []
            for item, _ in failed:
                metrics.CONSUMER_RETRIES.labels("data").inc()
                try:
                    plan = await self._attempt(lane, [item.request])
                except Abandoned:
                    raise
                except Exception as exc:
                    metrics.CONSUMER_MESSAGES.labels("failed").inc()
                    still.append((item, exc))
                    continue
                await self._after_commit(plan)
            failed = still
            if not failed:
                return
        for item, error in failed:
            await self._dead_letter(
                lane, item.record, item.request, repr(error), self._max_attempts
            )

    async def _attempt(self, lane: _Lane, requests: list[IssueRequest]) -> BatchPlan:
        if lane.abandon.is_set():
            raise Abandoned
        return await self._with_retries(lane, lambda: issue_batch(self._pool, requests))

    async def _with_retries(self, lane: _Lane, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation``, waiting out infrastructure faults with capped exponential backoff."""

        async def sleep(seconds: float) -> None:
            await self._sleep(lane, seconds)

        def before_sleep(state: RetryCallState) -> None:
            self._set_stalled(lane, True)
            metrics.CONSUMER_RETRIES.labels("transient").inc()
            exc = state.outcome.exception() if state.outcome else None
            log.warning("infrastructure fault, waiting it out: %r", exc)

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_infrastructure),
            wait=wait_exponential_jitter(initial=self._backoff_s, max=_MAX_BACKOFF_S),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

        async def attempt() -> T:  # tenacity awaits only what is a coroutine function
            return await operation()

        result: T = await retrying(attempt)
        if lane.stalled:
            self._set_stalled(lane, False)
            log.info("partition %d: infrastructure back, going on", lane.tp.partition)
        return result

    async def _sleep(self, lane: _Lane, seconds: float) -> None:
        """Wait, unless shutdown or a revocation says to give up (then raise Abandoned)."""
        waits = [asyncio.create_task(e.wait()) for e in (self._stop, lane.abandon)]
        try:
            done, _ = await asyncio.wait(waits, timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            for w in waits:
                w.cancel()
        if done:
            raise Abandoned

    # --- outcomes -----------------------------------------------------------------------------------

    async def _dead_letter(
        self,
        lane: _Lane,
        record: Record,
        request: IssueRequest | None,
        error: str,
        attempts: int,
    ) -> None:
        """Park the message on the DLQ, record a FAILED outcome and give its reservation back."""
        letter = DeadLetter(
            original_value=record.value,
            original_key=record.key,
            error=error,
            attempts=attempts,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            failed_at=datetime.now(UTC),
        )

        async def send() -> None:
            sent = await self._producer.send(
                self._dlq_topic, encode_dead_letter(letter), key=record.key
            )
            await sent

        await self._with_retries(lane, send)
        metrics.CONSUMER_MESSAGES.labels("dead_lettered").inc()
        log.error(
            "dead-lettered %s[%d]@%d after %d attempt(s): %s",
            record.topic,
            record.partition,
            record.offset,
            attempts,
            error,
        )
        if request is not None:
            failed = RecordedOutcome(
                request.request_id, IssueStatus.FAILED, FailReason.DEAD_LETTERED, letter.failed_at
            )
            await self._with_retries(lane, lambda: self._record_failure(request, failed, error))
            await self._give_back(request, failed)

    async def _record_failure(
        self, request: IssueRequest, failed: RecordedOutcome, error: str
    ) -> None:
        async with self._pool.acquire() as conn:
            await postgres.record_failure(
                conn,
                request.request_id,
                request.coupon_id,
                request.user_id,
                FailReason.DEAD_LETTERED,
                error,
                failed.at,
            )

    async def _give_back(self, request: IssueRequest, failed: RecordedOutcome) -> None:
        """The user's FAILED outcome where status reads see it, then the reservation back."""
        try:
            await self._gate.record_outcomes([(request.coupon_id, request.user_id, failed)])
            await self._gate.release(request.coupon_id, request.user_id, request.request_id)
            metrics.CONSUMER_RELEASED.inc()
        except Exception as exc:  # the reconciler releases it later (no decision, no lag)
            log.warning("could not release the reservation of %s: %r", request.request_id, exc)

    async def _after_commit(self, plan: BatchPlan) -> None:
        now = datetime.now(UTC)
        # One labelled-counter update per outcome and batch, not per message: a labels() lookup
        # and a locked inc() per message cost about a tenth of the consumer's CPU at 1000/batch.
        outcomes: Counter[str] = Counter()
        observe = metrics.CONSUMER_END_TO_END.observe
        for decision in plan.decisions:
            if decision.status is IssueStatus.ISSUED:
                outcomes["issued"] += 1
            else:
                reason = decision.reason.value.lower() if decision.reason else "unknown"
                outcomes[f"rejected_{reason}"] += 1
            observe(max(0.0, (now - decision.request.requested_at).total_seconds()))
        for outcome, n in outcomes.items():
            metrics.CONSUMER_MESSAGES.labels(outcome).inc(n)
        if plan.already_processed:
            metrics.CONSUMER_MESSAGES.labels("duplicate_delivery").inc(plan.already_processed)
        try:
            issued = [
                (d.request.coupon_id, d.request.user_id, d.request.request_id)
                for d in plan.decisions
                if d.status is IssueStatus.ISSUED
            ]
            await self._gate.record_processed(processed_per_coupon(plan), issued)
            at = plan.processed_at or now
            await self._gate.record_outcomes(
                (
                    d.request.coupon_id,
                    d.request.user_id,
                    RecordedOutcome(d.request.request_id, d.status, d.reason, at),
                )
                for d in plan.decisions
            )
        except Exception as exc:  # the reconciler repairs missing outcomes; never fail a batch
            log.warning("could not record outcomes in Redis: %r", exc)
