"""The API's dependencies, created once in the lifespan and passed to routes via app.state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from app.adapters.kafka import Publisher
from app.adapters.outcome_feed import OutcomeFeed
from app.adapters.rate_limit import RateLimiter
from app.adapters.redis_gate import RedisGate
from app.api.gate_loader import GateLoader
from app.config import Settings
from app.waits import within


@dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    gate: RedisGate
    publisher: Publisher
    limiter: RateLimiter
    feed: OutcomeFeed
    loader: GateLoader

    def db(self) -> Any:
        """Acquire a pooled PostgreSQL connection, waiting at most ``db_acquire_timeout_s``."""
        return self.pool.acquire(timeout=self.settings.db_acquire_timeout_s)

    async def broker_ready(self) -> bool:
        try:
            return bool(await within(self.publisher.producer.client.force_metadata_update(), 2))
        except Exception:
            return False

    async def redis_ready(self) -> bool:
        try:
            return await within(self.gate.ping(), 2)
        except Exception:
            return False
