"""The handling of one partition's batch: issue it, isolate what fails, settle the outcomes.

Faults are told apart by what they hit (app/consumer/faults.py for the error codes):
- the infrastructure's (database or broker away, read-only after a failover, a lock timeout, a
  missing table, ...): the lane waits with backoff for as long as it lasts and dead-letters
  nothing (app/consumer/retry.py); the partition shows as stalled (metric, log, readiness);
- a message's own: a batch that fails for an unknown reason is first checked against a probe
  write. If the database refuses that too, it is the infrastructure's. If not, the batch is split
  in halves until the failing messages stand alone (a few transactions, not one per message); a
  message that fails alone while the database takes writes gets ``max_attempts`` tries in all,
  then goes to the dead-letter topic, and its reservation is given back with a FAILED outcome.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeAlias

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from app.adapters import postgres
from app.adapters.dead_letters import publish_dead_letter
from app.adapters.redis_gate import RedisGate
from app.consumer.issue import issue_batch, processed_per_coupon
from app.consumer.retry import Abandoned, InfrastructureRetry, Lane
from app.domain.codec import DecodeError, IssueRequest, decode
from app.domain.dead_letter import DeadLetter
from app.domain.decision import BatchPlan
from app.domain.outcomes import FailReason, IssueStatus
from app.domain.settlement import FailedRequest
from app.domain.status import RecordedOutcome
from app.observability import metrics
from app.settle import OutcomesNotWritten, settle_failed

log = logging.getLogger(__name__)
Record: TypeAlias = ConsumerRecord[bytes, bytes]


class _DatabaseRefusesWrites(Exception):
    """A whole batch failed and the probe write failed too: the infrastructure's fault."""

    def __str__(self) -> str:
        return "every message fails and the database refuses a probe write"


@dataclass(frozen=True, slots=True)
class _Item:
    record: Record
    request: IssueRequest


@dataclass(frozen=True, slots=True)
class BatchHandler:
    """Issues one partition's batch; returns once every message has its outcome."""

    producer: AIOKafkaProducer
    pool: asyncpg.Pool
    gate: RedisGate
    retry: InfrastructureRetry
    dlq_topic: str
    max_attempts: int

    async def handle(self, lane: Lane, records: Sequence[Record]) -> None:
        """Issue ``records``; raises :class:`Abandoned` if the lane gives up meanwhile."""
        items: list[_Item] = []
        for record in records:
            try:
                items.append(_Item(record, decode(record.value)))
            except DecodeError as exc:
                await self._dead_letter(lane, record, None, f"undecodable message: {exc}", 1)
        if not items:
            return
        started = time.perf_counter()
        failed = await self.retry.call(
            lane,
            lambda: self._issue_isolating(lane, items, whole_batch=True),
            also=(_DatabaseRefusesWrites,),
        )
        metrics.CONSUMER_BATCH_DURATION.observe(time.perf_counter() - started)
        metrics.CONSUMER_BATCH_SIZE.observe(len(items))
        if failed:
            await self._retry_alone(lane, failed)

    async def _issue_isolating(
        self, lane: Lane, items: list[_Item], whole_batch: bool = False
    ) -> list[tuple[_Item, Exception]]:
        """Issue ``items``; on a data fault split in halves. Returns the items that failed alone."""
        try:
            plan = await self._attempt(lane, [i.request for i in items])
        except (Abandoned, _DatabaseRefusesWrites):
            raise
        except Exception as exc:
            metrics.CONSUMER_MESSAGES.labels("failed").inc()
            if whole_batch:
                await self._check_database_takes_writes(lane)
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

    async def _check_database_takes_writes(self, lane: Lane) -> None:
        try:
            await self.retry.call(lane, lambda: postgres.probe_writes(self.pool))
        except Abandoned:
            raise
        except Exception as exc:
            raise _DatabaseRefusesWrites from exc

    async def _retry_alone(self, lane: Lane, failed: list[tuple[_Item, Exception]]) -> None:
        """Messages that failed alone get their remaining attempts in rounds, then the DLQ."""
        for attempt in range(2, self.max_attempts + 1):
            await self.retry.pause(lane, self.retry.backoff_s(attempt - 1))
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
            await self._dead_letter(lane, item.record, item.request, repr(error), self.max_attempts)

    async def _attempt(self, lane: Lane, requests: list[IssueRequest]) -> BatchPlan:
        return await self.retry.call(lane, lambda: issue_batch(self.pool, requests))

    # --- outcomes -----------------------------------------------------------------------------------

    async def _dead_letter(
        self,
        lane: Lane,
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
        await self.retry.call(
            lane, lambda: publish_dead_letter(self.producer, self.dlq_topic, letter)
        )
        metrics.CONSUMER_MESSAGES.labels("dead_lettered").inc()
        log.error(
            "dead-lettered %s[%d]@%d after %d attempt(s): %s",
            record.topic,
            record.partition,
            record.offset,
            attempts,
            error,
        )
        if request is None:
            return
        failure = FailedRequest(
            request.request_id,
            request.coupon_id,
            request.user_id,
            FailReason.DEAD_LETTERED,
            error,
            letter.failed_at,
        )
        try:
            released = await settle_failed(
                self.pool,
                self.gate,
                [failure],
                db_calls=lambda write: self.retry.call(lane, write),
                tell_if_released=True,
            )
        except OutcomesNotWritten as exc:  # the reconciler releases it later (no decision, no lag)
            log.warning(
                "could not release the reservation of %s: %r", request.request_id, exc.__cause__
            )
            return
        metrics.CONSUMER_RELEASED.inc(len(released))

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
            at = plan.processed_at or now
            await self.gate.record_batch(
                processed_per_coupon(plan),
                issued,
                [
                    (
                        d.request.coupon_id,
                        d.request.user_id,
                        RecordedOutcome(d.request.request_id, d.status, d.reason, at),
                    )
                    for d in plan.decisions
                ],
            )
        except Exception as exc:  # the reconciler repairs missing outcomes; never fail a batch
            log.warning("could not record outcomes in Redis: %r", exc)
