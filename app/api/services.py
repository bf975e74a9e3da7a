"""The API's dependencies, created once in the lifespan and passed to routes via app.state."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer

from app.adapters import postgres
from app.adapters.kafka import Publisher
from app.adapters.rate_limit import RateLimiter
from app.adapters.redis_gate import RedisGate
from app.config import Settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    gate: RedisGate
    producer: AIOKafkaProducer
    publisher: Publisher
    limiter: RateLimiter

    async def warm_gate(self, coupon_id: UUID) -> bool:
        """Rebuild one coupon's gate from PostgreSQL (Redis lost it); False if it does not exist."""
        async with self.pool.acquire() as conn:
            coupon = await postgres.get_coupon(conn, coupon_id)
            if coupon is None:
                await self.gate.mark_missing(coupon_id)
                return False
            holders = await postgres.holders(conn, coupon_id)
        await self.gate.load(coupon.id, coupon.total_quantity, coupon.expires_at, holders)
        log.info("rebuilt gate for coupon %s from PostgreSQL (%d holders)", coupon_id, len(holders))
        return True

    async def warm_active_gates(self) -> int:
        """At start: rebuild the gate of every active coupon Redis does not know."""
        async with self.pool.acquire() as conn:
            coupons = await postgres.active_coupons(conn, datetime.now(UTC))
        rebuilt = 0
        for coupon in coupons:
            if not await self.gate.is_loaded(coupon.id):
                rebuilt += await self.warm_gate(coupon.id)
        return rebuilt

    async def broker_ready(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.producer.client.force_metadata_update(), 2))
        except Exception:
            return False

    async def redis_ready(self) -> bool:
        try:
            return await asyncio.wait_for(self.gate.ping(), 2)
        except Exception:
            return False
