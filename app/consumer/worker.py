"""The issue worker's batch loop: poll, issue per partition, commit offsets after the DB commit.

Faults are split in two: a transient fault (PostgreSQL or the broker unreachable) is retried with
backoff for as long as it lasts and never dead-letters anything; a data fault (a message the
database refuses) is isolated to its message, which is retried ``max_attempts`` times and then
dead-lettered so its partition keeps flowing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeAlias, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord

from app.adapters.redis_gate import RedisGate
from app.consumer.issuer import issue_batch, processed_per_coupon
from app.domain.codec import DecodeError, IssueRequest, decode
from app.domain.dead_letter import DeadLetter, encode_dead_letter
from app.domain.issuance import BatchPlan
from app.domain.outcomes import IssueStatus
from app.observability import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
Record: TypeAlias = ConsumerRecord[bytes, bytes]
_TRANSIENT_SQLSTATE_CLASSES = {"08", "53", "57", "40"}  # connection, resources, shutdown, retry
_MAX_BACKOFF_S = 5.0


class StopRequested(Exception):
    """Shutdown arrived while waiting to retry; the batch stays uncommitted and is redelivered."""


def is_transient(exc: BaseException) -> bool:
    """A fault of the infrastructure (retry it), not of the message (isolate it)."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError | KafkaError):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES


class _Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: IssueWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Offsets are committed after every batch, so there is nothing pending to flush here.
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
        self._backoff_s = retry_backoff_s
        self._stop = asyncio.Event()
        self.joined = asyncio.Event()

    def stop(self) -> None:
        """Ask the loop to finish its current batch, commit and return."""
        self._stop.set()

    async def run(self) -> None:
        self._consumer.subscribe([self._topic], listener=_Rebalances(self))
        while not self._stop.is_set():
            batches = await self._consumer.getmany(timeout_ms=500, max_records=self._batch_max)
            if not batches:
                continue
            done = await asyncio.gather(
                *(self._process_partition(tp, records) for tp, records in batches.items())
            )
            offsets = {
                tp: records[-1].offset + 1
                for (tp, records), ok in zip(batches.items(), done, strict=True)
                if ok
            }
            await self._commit(offsets)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced under us: the new owner re-reads these messages, and
            # redelivery changes nothing in the database.
            log.warning("offset commit lost to a rebalance, messages will be redelivered: %s", exc)

    async def _process_partition(self, tp: TopicPartition, records: Sequence[Record]) -> bool:
        """Process one partition's batch; False if shutdown interrupted it (not committed)."""
        decoded: list[tuple[Record, IssueRequest]] = []
        try:
            for record in records:
                try:
                    decoded.append((record, decode(record.value)))
                except DecodeError as exc:
                    await self._dead_letter(record, f"undecodable message: {exc}", attempts=1)
            if not decoded:
                return True
            started = time.perf_counter()
            try:
                plan = await self._retry_transient(
                    lambda: issue_batch(self._pool, [r for _, r in decoded])
                )
            except StopRequested:
                raise
            except Exception as exc:
                log.warning(
                    "batch of %d on partition %d failed (%r); isolating messages",
                    len(decoded),
                    tp.partition,
                    exc,
                )
                metrics.CONSUMER_RETRIES.labels("data").inc()
                for record, request in decoded:
                    await self._process_alone(record, request)
                return True
            metrics.CONSUMER_BATCH_DURATION.observe(time.perf_counter() - started)
            metrics.CONSUMER_BATCH_SIZE.observe(len(decoded))
            await self._after_commit(plan)
            return True
        except StopRequested:
            return False

    async def _process_alone(self, record: Record, request: IssueRequest) -> None:
        """Give one message ``max_attempts`` tries on its own, then dead-letter it."""
        last_error: Exception | None = None
        for attempt in range(1, self._max_attempts + 1):
            try:
                plan = await self._retry_transient(lambda: issue_batch(self._pool, [request]))
            except StopRequested:
                raise
            except Exception as exc:
                last_error = exc
                metrics.CONSUMER_MESSAGES.labels("failed").inc()
                if attempt < self._max_attempts:
                    metrics.CONSUMER_RETRIES.labels("data").inc()
                    await self._wait(self._backoff_s * 2 ** (attempt - 1))
                continue
            await self._after_commit(plan)
            return
        await self._dead_letter(record, repr(last_error), attempts=self._max_attempts)

    async def _retry_transient(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation``, retrying transient faults with capped exponential backoff."""
        delay = max(self._backoff_s, 0.05)
        while True:
            try:
                return await operation()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                metrics.CONSUMER_RETRIES.labels("transient").inc()
                log.warning("transient fault, retrying in %.2fs: %r", delay, exc)
                await self._wait(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return
        raise StopRequested

    async def _dead_letter(self, record: Record, error: str, attempts: int) -> None:
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

        await self._retry_transient(send)
        metrics.CONSUMER_MESSAGES.labels("dead_lettered").inc()
        log.error(
            "dead-lettered %s[%d]@%d after %d attempt(s): %s",
            record.topic,
            record.partition,
            record.offset,
            attempts,
            error,
        )

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
        except Exception as exc:  # queueSize is advisory; never fail an issued batch for it
            log.warning("could not update processed counters in Redis: %r", exc)
