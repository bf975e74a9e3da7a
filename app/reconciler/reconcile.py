"""Where a reservation with no outcome is settled: ``coupon-issuer reconcile``, and a periodic
pass in the lag exporter (one replica, already deployed by the chart) and in ``make run``.

A pass reads, in this order, so that a request moving along the pipeline meanwhile is seen
further along, never settled by mistake: the gate's holders, then the topic's lag (and id), then
PostgreSQL's decisions. Reservations that look stranded twice in a row (app/domain/settlement.py)
get a FAILED outcome, with the reason their partition's watch supports, and then their
reservation is given back, a chunk at a time (app/settle.py). A pass stops between two
chunks once asked to; :func:`reconcile_until` returns within ``STOP_GRACE_S`` of its stop event.
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

from app.adapters import postgres, postgres_setup, redis_client
from app.adapters.kafka import coupon_partition
from app.adapters.kafka_lag import LagReader, LagReadError
from app.adapters.redis_gate import RedisGate
from app.config import Settings
from app.domain.settlement import (
    PartitionWatch,
    Reservation,
    Settled,
    confirmed,
    failure_reason,
    next_watch,
    stranded_suspects,
)
from app.observability import metrics
from app.settle import settle_stranded
from app.waits import cancel_and_wait, until_set, within

log = logging.getLogger(__name__)
_RECENTLY_EXPIRED = timedelta(days=1)  # holders of coupons expired longer ago are left alone
# After its stop event, a pass gets this long to finish the chunk it is in; then it is cancelled
# (what it left half done is found again by the next pass: see app/settle.py).
STOP_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class PassReport:
    coupons: int
    suspects: int
    released: list[Settled]
    skipped: str | None = None  # why nothing could be told this time
    stopped: bool = False  # the stop event cut the pass short: the rest waits for the next one


@dataclass(frozen=True, slots=True)
class _Look:
    """One read of the topic: its id, each partition's log end and lag, and when it was done."""

    topic_id: UUID | None
    log_ends: dict[int, int]
    lag: dict[int, int]
    seen_at: datetime


class Reconciler:
    """Settles stranded reservations; remembers the previous pass's suspects to confirm them,
    and each partition's watch (in PostgreSQL) to tell what their users may be told."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, gate: RedisGate) -> None:
        self._settings = settings
        self._pool = pool
        self._gate = gate
        self._suspects: set[Reservation] = set()

    async def run_pass(self, stop: asyncio.Event | None = None) -> PassReport:
        """One observation; releases the reservations the previous pass suspected too, until
        ``stop`` is set."""
        try:
            report = await self._observe_and_settle(stop or asyncio.Event())
        except Exception:
            metrics.RECONCILER_RUNS.labels("error").inc()
            raise
        result = "skipped" if report.skipped else "stopped" if report.stopped else "ok"
        metrics.RECONCILER_RUNS.labels(result).inc()
        return report

    async def _observe_and_settle(self, stop: asyncio.Event) -> PassReport:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn:
            active = await postgres.active_coupons(conn, now - _RECENTLY_EXPIRED)
        pinned = {c.id: c.partition for c in active}
        coupons = list(pinned)
        holders: dict[UUID, dict[str, str]] = {}
        for cid in coupons:
            if stop.is_set():
                return PassReport(len(coupons), len(self._suspects), [], stopped=True)
            holders[cid] = await self._gate.holder_requests(cid)
        look = await self._look()
        if look is None:
            return PassReport(len(coupons), len(self._suspects), [], "broker could not be read")
        watches = await self._watch(look)
        requests = {cid: _request_ids(held) for cid, held in holders.items()}
        request_ids = [rid for held in requests.values() for rid in held.values()]
        async with self._pool.acquire() as conn:
            undecided = await postgres.undecided_requests(conn, request_ids)
        min_age = timedelta(seconds=self._settings.reconcile_min_age_s)
        partition = {cid: coupon_partition(cid, pinned[cid], len(look.lag)) for cid in coupons}
        suspects = [
            r
            for cid, held in requests.items()
            for r in stranded_suspects(
                cid, held, undecided, look.lag.get(partition[cid]), now, min_age
            )
        ]
        await self._repair_outcomes(requests, set(request_ids) - undecided)
        stranded = confirmed(self._suspects, suspects)
        told = [
            (r, failure_reason(r.request_id, watches.get(partition[r.coupon_id]))) for r in stranded
        ]
        settled, stopped = await settle_stranded(self._pool, self._gate, told, stop)
        given_back = {Reservation(s.coupon_id, s.user_id, s.request_id) for s in settled}
        # Suspects not settled yet (a stop came first) stay confirmed for the next pass.
        self._suspects = set(suspects) - given_back
        metrics.RECONCILER_SUSPECTS.set(len(self._suspects))
        return PassReport(len(coupons), len(suspects), settled, None, stopped)

    async def _repair_outcomes(
        self, requests: dict[UUID, dict[str, UUID]], decided: set[UUID]
    ) -> None:
        """Holders whose request is decided but whose outcome Redis lacks (the consumer's write
        after its commit failed): copy the outcome from PostgreSQL, so status reads see it."""
        lacking: list[UUID] = []
        for cid, held in requests.items():
            users = [u for u, r in held.items() if r in decided]
            for user in await self._gate.missing_outcomes(cid, users):
                lacking.append(held[user])
        if not lacking:
            return
        async with self._pool.acquire() as conn:
            outcomes = await postgres.outcomes_of_requests(conn, lacking)
        await self._gate.record_outcomes(outcomes)
        log.warning("reconciler: copied %d missing outcome(s) into Redis", len(outcomes))

    async def _look(self) -> _Look | None:
        """The topic's id and offsets; None when the broker cannot be read."""
        topic = self._settings.topic
        try:
            async with LagReader(self._settings.kafka_bootstrap) as reader:
                topic_id = await reader.topic_id(topic)
                snapshot = await reader.read(topic, self._settings.consumer_group)
        except (LagReadError, OSError) as exc:
            log.warning("reconciler: cannot read the topic's lag, settling nothing: %r", exc)
            return None
        return _Look(
            topic_id,
            {p.partition: p.log_end for p in snapshot.partitions},
            {p.partition: p.lag for p in snapshot.partitions},
            datetime.now(UTC),
        )

    async def _watch(self, look: _Look) -> dict[int, PartitionWatch]:
        """Compare this look with the last one remembered, remember it, and say any loss seen."""
        topic = self._settings.topic
        async with self._pool.acquire() as conn:
            previous = await postgres.partition_watches(conn, topic)
            watches = {
                n: next_watch(previous.get(n), n, look.topic_id, end, look.seen_at)
                for n, end in look.log_ends.items()
            }
            await postgres.save_partition_watches(conn, topic, list(watches.values()))
        for n, watch in watches.items():
            if watch.lost_at == look.seen_at:
                log.warning(
                    "reconciler: topic %s partition %d lost acknowledged messages (%s): presses"
                    " accepted before now that end with no outcome are told %s",
                    topic,
                    n,
                    watch.lost_why,
                    watch.lost_reason,
                )
        return watches


def _request_ids(held: dict[str, str]) -> dict[str, UUID]:
    """The holders' request ids, parsed once (a holder whose value is no UUID is left out)."""
    found: dict[str, UUID] = {}
    for user, text in held.items():
        try:
            found[user] = UUID(text)
        except ValueError:
            continue
    return found


async def reconcile_until(settings: Settings, stop: asyncio.Event, interval_s: float) -> None:
    """Run a pass every ``interval_s`` until ``stop`` is set; nothing that fails here is fatal.

    Returns within ``STOP_GRACE_S`` of ``stop`` whatever the backlog: the pass in progress stops
    after its chunk, or is cancelled.
    """
    passes = asyncio.create_task(_pass_every(settings, stop, interval_s))
    try:
        await stop.wait()
        await asyncio.wait({passes}, timeout=STOP_GRACE_S)
    finally:
        if not passes.done():
            log.warning("reconciler: pass still running %.1fs after stop, cancelling", STOP_GRACE_S)
        await cancel_and_wait(passes)


async def _pass_every(settings: Settings, stop: asyncio.Event, interval_s: float) -> None:
    while not stop.is_set():
        try:
            async with open_reconciler(settings) as reconciler:
                while not stop.is_set():
                    await reconciler.run_pass(stop)
                    await until_set(stop, interval_s)
        except Exception as exc:
            log.warning("reconciler pass failed, trying again: %r", exc)
            await until_set(stop, interval_s)


async def reconcile_once(settings: Settings, confirm_after_s: float) -> PassReport:
    """Two observations ``confirm_after_s`` apart; settles what both saw stranded."""
    async with open_reconciler(settings) as reconciler:
        first = await reconciler.run_pass()
        if first.skipped or not first.suspects:
            return first
        await asyncio.sleep(confirm_after_s)
        return await reconciler.run_pass()


@asynccontextmanager
async def open_reconciler(settings: Settings) -> AsyncIterator[Reconciler]:
    """A reconciler with its own connections, closed after use (promptly, even when cancelled)."""
    pool = await postgres_setup.create_pool(
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
        try:
            await within(pool.close(), STOP_GRACE_S)
        except TimeoutError:
            pool.terminate()
