"""Where a reservation with no outcome is settled: ``coupon-issuer reconcile``, and a periodic
pass in the lag exporter (one replica, already deployed by the chart).

A pass reads, in this order, so that a request moving along the pipeline meanwhile is seen
further along, never settled by mistake: the gate's holders, then the topic's lag, then
PostgreSQL's decisions. Reservations that look stranded twice in a row (app/domain/settlement.py)
get a FAILED outcome with reason NOT_QUEUED, and then their reservation is given back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from app.adapters import postgres, redis_client
from app.adapters.kafka import coupon_partition
from app.adapters.kafka_lag import LagReader, LagReadError
from app.adapters.redis_gate import RedisGate
from app.config import Settings
from app.domain.outcomes import FailReason, IssueStatus
from app.domain.settlement import Reservation, confirmed, stranded_suspects
from app.domain.status import RecordedOutcome
from app.observability import metrics

log = logging.getLogger(__name__)
_RECENTLY_EXPIRED = timedelta(days=1)  # holders of coupons expired longer ago are left alone


@dataclass(frozen=True, slots=True)
class PassReport:
    coupons: int
    suspects: int
    released: list[Reservation]
    skipped: str | None = None  # why nothing could be told this time


class Reconciler:
    """Settles stranded reservations; remembers the previous pass's suspects to confirm them."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, gate: RedisGate) -> None:
        self._settings = settings
        self._pool = pool
        self._gate = gate
        self._suspects: set[Reservation] = set()

    async def run_pass(self) -> PassReport:
        """One observation; releases the reservations the previous pass suspected too."""
        try:
            report = await self._observe_and_settle()
        except Exception:
            metrics.RECONCILER_RUNS.labels("error").inc()
            raise
        metrics.RECONCILER_RUNS.labels("skipped" if report.skipped else "ok").inc()
        return report

    async def _observe_and_settle(self) -> PassReport:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn:
            active = await postgres.active_coupons(conn, now - _RECENTLY_EXPIRED)
        pinned = {c.id: c.partition for c in active}
        coupons = list(pinned)
        holders = {cid: await self._gate.holder_requests(cid) for cid in coupons}
        lag = await self._partition_lag()
        if lag is None:
            return PassReport(len(coupons), len(self._suspects), [], "broker could not be read")
        request_ids = [UUID(r) for held in holders.values() for r in held.values() if _is_uuid(r)]
        async with self._pool.acquire() as conn:
            undecided = await postgres.undecided_requests(conn, request_ids)
        min_age = timedelta(seconds=self._settings.reconcile_min_age_s)
        suspects = [
            r
            for cid, held in holders.items()
            for r in stranded_suspects(
                cid,
                held,
                undecided,
                lag.get(coupon_partition(cid, pinned[cid], len(lag))),
                now,
                min_age,
            )
        ]
        await self._repair_outcomes(holders, set(request_ids) - undecided)
        stranded = confirmed(self._suspects, suspects)
        self._suspects = set(suspects) - set(stranded)
        metrics.RECONCILER_SUSPECTS.set(len(self._suspects))
        for reservation in stranded:
            await self._settle(reservation)
        return PassReport(len(coupons), len(suspects), stranded)

    async def _repair_outcomes(
        self, holders: dict[UUID, dict[str, str]], decided: set[UUID]
    ) -> None:
        """Holders whose request is decided but whose outcome Redis lacks (the consumer's write
        after its commit failed): copy the outcome from PostgreSQL, so status reads see it."""
        lacking: list[UUID] = []
        for cid, held in holders.items():
            users = [u for u, r in held.items() if _is_uuid(r) and UUID(r) in decided]
            for user in await self._gate.missing_outcomes(cid, users):
                lacking.append(UUID(held[user]))
        if not lacking:
            return
        async with self._pool.acquire() as conn:
            outcomes = await postgres.outcomes_of_requests(conn, lacking)
        await self._gate.record_outcomes(outcomes)
        log.warning("reconciler: copied %d missing outcome(s) into Redis", len(outcomes))

    async def _partition_lag(self) -> dict[int, int] | None:
        try:
            async with LagReader(self._settings.kafka_bootstrap) as reader:
                snapshot = await reader.read(self._settings.topic, self._settings.consumer_group)
        except (LagReadError, OSError) as exc:
            log.warning("reconciler: cannot read the topic's lag, settling nothing: %r", exc)
            return None
        return {p.partition: p.lag for p in snapshot.partitions}

    async def _settle(self, r: Reservation) -> None:
        """Record the outcome first: if giving back fails, the next pass finds it again."""
        failed = RecordedOutcome(
            r.request_id, IssueStatus.FAILED, FailReason.NOT_QUEUED, datetime.now(UTC)
        )
        async with self._pool.acquire() as conn:
            await postgres.record_failure(
                conn,
                r.request_id,
                r.coupon_id,
                r.user_id,
                FailReason.NOT_QUEUED,
                "accepted at the gate, never reached the queue; reservation released",
                failed.at,
            )
        await self._gate.record_outcomes([(r.coupon_id, r.user_id, failed)])
        await self._gate.release(r.coupon_id, r.user_id, r.request_id)
        metrics.RECONCILER_RELEASED.inc()
        log.warning(
            "released stranded reservation: coupon %s user %s request %s",
            r.coupon_id,
            r.user_id,
            r.request_id,
        )


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


async def reconcile_until(settings: Settings, stop: asyncio.Event, interval_s: float) -> None:
    """Run a pass every ``interval_s`` until ``stop`` is set; nothing that fails here is fatal."""
    while not stop.is_set():
        try:
            async with _reconciler(settings) as reconciler:
                while not stop.is_set():
                    report = await reconciler.run_pass()
                    if report.released:
                        log.info("reconciler released %d reservation(s)", len(report.released))
                    await _wait(stop, interval_s)
        except Exception as exc:
            log.warning("reconciler pass failed, trying again: %r", exc)
            await _wait(stop, interval_s)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def reconcile_once(settings: Settings, confirm_after_s: float) -> PassReport:
    """Two observations ``confirm_after_s`` apart; settles what both saw stranded."""
    async with _reconciler(settings) as reconciler:
        first = await reconciler.run_pass()
        if first.skipped or not first.suspects:
            return first
        await asyncio.sleep(confirm_after_s)
        return await reconciler.run_pass()


@asynccontextmanager
async def _reconciler(settings: Settings) -> AsyncIterator[Reconciler]:
    """A reconciler with its own connections, closed after use."""
    pool = await postgres.create_pool(
        settings.database_url,
        settings.db_schema,
        2,
        "coupon-reconciler",
        settings.db_statement_cache_size,
    )
    client = redis_client.connect(settings, socket_timeout=5)
    try:
        yield Reconciler(settings, pool, RedisGate(client, settings.redis_prefix))
    finally:
        await client.aclose()
        await pool.close()
