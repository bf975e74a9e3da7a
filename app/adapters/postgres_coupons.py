"""The lag exporter's own PostgreSQL reader: the newest active coupons, over a one-connection pool.

The SQL is :func:`app.adapters.postgres.active_coupons`; this module owns the pool it runs on,
opened on first read (the exporter starts whether or not the database answers yet).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from app.adapters import postgres, postgres_setup
from app.domain.coupon import Coupon


class CouponReader:
    """The newest active coupons, at most ``limit`` (a bounded label set)."""

    def __init__(
        self, database_url: str, schema: str, limit: int, statement_cache_size: int = 100
    ) -> None:
        self._database_url = database_url
        self._schema = schema
        self._limit = limit
        self._statement_cache_size = statement_cache_size
        self._pool: asyncpg.Pool | None = None

    async def read(self, now: datetime) -> tuple[list[Coupon], bool]:
        """The coupons and whether more active coupons exist than ``limit``."""
        if self._pool is None:
            self._pool = await postgres_setup.create_pool(
                self._database_url,
                self._schema,
                1,
                "coupon-lag-exporter",
                self._statement_cache_size,
            )
        async with self._pool.acquire() as conn:
            coupons = await postgres.active_coupons(conn, now, self._limit + 1)
        return coupons[: self._limit], len(coupons) > self._limit

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
