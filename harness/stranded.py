"""Stranded reservations made on purpose: gate holders whose request has no message and no
decision, as an API that died between reserving and publishing leaves them.

The tests of the reconciler and its settle-rate measurement (``python -m harness.stranded``) seed
them straight into PostgreSQL (the coupon) and Redis (the holders), with request ids made
``age`` ago, so a pass finds them stranded at once, on an empty topic (no lag).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.adapters import postgres, postgres_setup, redis_client
from app.adapters.redis_gate import RedisGate
from app.config import Settings
from app.domain.request_ids import new_request_id
from harness.coupons import sale_coupon


def request_id_made_at(moment: datetime) -> uuid.UUID:
    """A UUIDv7 request id whose time is ``moment``."""
    ms = int(moment.timestamp() * 1000)
    rest = new_request_id().int & ((1 << 80) - 1)  # version, variant and random bits
    return uuid.UUID(int=(ms & 0xFFFF_FFFF_FFFF) << 80 | rest)


@dataclass(frozen=True, slots=True)
class Seeded:
    coupon_id: uuid.UUID
    user_id: str
    request_id: uuid.UUID


async def seed_stranded(
    settings: Settings, coupons: int, per_coupon: int, age: timedelta = timedelta(hours=1)
) -> list[Seeded]:
    """Create ``coupons`` coupons (stock ``per_coupon`` each, in the database) and fill each
    one's gate with ``per_coupon`` reservations made ``age`` ago that nothing will ever decide."""
    made = datetime.now(UTC) - age
    seeded: list[Seeded] = []
    pool = await postgres_setup.create_pool(settings.database_url, settings.db_schema, 1)
    client = redis_client.connect(settings)
    try:
        gate = RedisGate(client, settings.redis_prefix)
        for _ in range(coupons):
            coupon = sale_coupon(
                per_coupon, "stranded", created_at=made, expires_in=timedelta(hours=2)
            )
            async with pool.acquire() as conn:
                await postgres.insert_coupon(conn, coupon)
            holders = [(f"u{i}", request_id_made_at(made)) for i in range(per_coupon)]
            await gate.load(coupon.id, per_coupon, coupon.expires_at, holders)
            seeded.extend(Seeded(coupon.id, user, rid) for user, rid in holders)
    finally:
        await client.aclose()
        await pool.close()
    return seeded


async def held(settings: Settings, coupon_ids: list[uuid.UUID]) -> int:
    """How many reservations the gate still holds for these coupons."""
    client = redis_client.connect(settings)
    try:
        gate = RedisGate(client, settings.redis_prefix)
        return sum([int(await client.hlen(gate.keys(c)[1])) for c in coupon_ids])
    finally:
        await client.aclose()


async def measure(settings: Settings, reservations: int) -> float:
    """Reservations settled per second by one confirming pass over ``reservations``."""
    from app.reconciler import reconcile

    seeded = await seed_stranded(settings, 1, reservations)
    async with reconcile.open_reconciler(settings) as reconciler:
        await reconciler.run_pass()  # the first sighting: suspects
        started = time.perf_counter()
        report = await reconciler.run_pass()  # the second: settles them
        elapsed = time.perf_counter() - started
    assert len(report.released) == reservations, len(report.released)
    assert await held(settings, [seeded[0].coupon_id]) == 0
    return reservations / elapsed


def main() -> None:
    """Seed a backlog on an embedded stack (or the COUPON_* servers) and time its settlement."""
    from app.local.stack import local_systems, prepare
    from harness.processes import isolated

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--reservations", type=int, default=20_000)
    args = parser.parse_args()
    # The service's own log lines are written (their cost is part of settling), then dropped.
    logging.basicConfig(level=logging.WARNING, stream=open(os.devnull, "w"))
    base = Settings(_env_file=None)
    with local_systems(base) as (resolved, _):
        settings = isolated(resolved, "settle", log_level="ERROR", reconcile_min_age_s=60)
        prepare(settings)
        rate = asyncio.run(measure(settings, args.reservations))
    print(f"{args.reservations} reservations settled at {rate:,.0f}/s ({Path.cwd().name})")


if __name__ == "__main__":
    main()
