"""The gate's cold path: when Redis has lost a coupon's gate, it is rebuilt from PostgreSQL once —
one rebuild per coupon in this process (single flight) and across processes (a short Redis lock) —
and unknown coupon ids are refused from the coupon registry in Redis, without a PostgreSQL query.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from app.adapters import postgres
from app.adapters.redis_gate import RedisGate
from app.observability import metrics

log = logging.getLogger(__name__)
_LOCK_TTL_MS = 30_000  # a rebuild lock outlives any rebuild; it expires if its holder dies
_LOCK_POLL_S = 0.05


class GateRebuildTimeout(TimeoutError):
    """Another process took too long rebuilding a coupon's gate (answered 503 BUSY)."""


@dataclass
class GateLoader:
    """Loads a coupon's gate (and the coupon registry) into Redis from PostgreSQL, once."""

    pool: asyncpg.Pool
    gate: RedisGate
    acquire_timeout_s: float
    rebuild_wait_s: float
    _flights: dict[object, asyncio.Future[Any]] = field(default_factory=dict, repr=False)

    def db(self) -> Any:
        return self.pool.acquire(timeout=self.acquire_timeout_s)

    async def open_gate(self, coupon_id: UUID) -> bool:
        """Make sure the coupon's gate is loaded; False if no such coupon exists.

        Unknown ids are answered from the registry in Redis; PostgreSQL is read only when Redis
        lost the registry (once per process) or the coupon's gate (once per coupon).
        """
        known = await self.gate.is_registered(coupon_id)
        if known is None:
            await self._single_flight("registry", self._load_registry)
            known = await self.gate.is_registered(coupon_id)
        if not known:
            return False
        return bool(await self._single_flight(coupon_id, lambda: self._rebuild(coupon_id)))

    async def _single_flight(self, key: object, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``work`` once for every concurrent caller with the same key."""
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(work())
            self._flights[key] = flight
            flight.add_done_callback(lambda _: self._flights.pop(key, None))
        return await asyncio.shield(flight)

    async def _rebuild(self, coupon_id: UUID) -> bool:
        """Rebuild under the coupon's Redis lock, or wait for the process that holds it."""
        token = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.rebuild_wait_s
        while not await self.gate.is_loaded(coupon_id):
            if await self.gate.lock_rebuild(coupon_id, token, _LOCK_TTL_MS):
                try:
                    return await self._load_gate(coupon_id)
                finally:
                    await self.gate.unlock_rebuild(coupon_id, token)
            if loop.time() > give_up:
                raise GateRebuildTimeout(f"gate of {coupon_id} still being rebuilt elsewhere")
            await asyncio.sleep(_LOCK_POLL_S)
        return True

    async def _load_gate(self, coupon_id: UUID) -> bool:
        metrics.GATE_DB_READS.labels("gate").inc()
        async with self.db() as conn:
            coupon = await postgres.get_coupon(conn, coupon_id)
            if coupon is None:
                return False
            holders = await postgres.holders(conn, coupon_id)
            outcomes = await postgres.coupon_outcomes(conn, coupon_id)
        await self.gate.load(
            coupon.id,
            coupon.total_quantity,
            coupon.expires_at,
            holders,
            outcomes,
            partition=coupon.partition,
        )
        metrics.GATE_REBUILDS.inc()
        log.info("rebuilt gate for coupon %s from PostgreSQL (%d holders)", coupon_id, len(holders))
        return True

    async def _load_registry(self) -> None:
        metrics.GATE_DB_READS.labels("registry").inc()
        async with self.db() as conn:
            ids = await postgres.coupon_ids(conn)
        await self.gate.register(ids, complete=True)
        log.info("loaded the coupon registry from PostgreSQL (%d coupons)", len(ids))

    async def warm_active_gates(self) -> int:
        """At start: load the registry and every active coupon's gate that Redis does not hold."""
        await self._single_flight("registry", self._load_registry)
        async with self.db() as conn:
            coupons = await postgres.active_coupons(conn, datetime.now(UTC))
        rebuilt = 0
        for coupon in coupons:
            if not await self.gate.is_loaded(coupon.id):
                rebuilt += await self.open_gate(coupon.id)
        return rebuilt
