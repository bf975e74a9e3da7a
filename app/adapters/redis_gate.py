"""Redis gate: the fast, atomic admission check in front of Kafka. A cache; PostgreSQL is the truth."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from uuid import UUID

import redis.asyncio as aioredis

from app.domain.outcomes import GateOutcome

_CODES = {
    0: GateOutcome.ACCEPTED,
    1: GateOutcome.DUPLICATE,
    2: GateOutcome.SOLD_OUT,
    3: GateOutcome.EXPIRED,
    4: GateOutcome.NOT_FOUND,
}
_MISSING_TTL_SECONDS = 10
_REBUILD_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class GateAnswer:
    """The gate's verdict; ``loaded`` is False when Redis has no entry for the coupon."""

    outcome: GateOutcome | None
    queue_ahead: int = 0

    @property
    def loaded(self) -> bool:
        return self.outcome is not None


class RedisGate:
    """Reservation set per coupon, evaluated by one Lua script per press."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        source = (resources.files("app.adapters") / "gate_reserve.lua").read_text()
        self._reserve = client.register_script(source)

    def _keys(self, coupon_id: UUID) -> tuple[str, str, str, str]:
        # One hash tag per coupon keeps all of its keys on one Redis Cluster slot.
        base = f"{self._prefix}:{{{coupon_id}}}"
        return f"{base}:meta", f"{base}:users", f"{base}:processed", f"{base}:missing"

    async def reserve(self, coupon_id: UUID, user_id: str, now: datetime) -> GateAnswer:
        """Check and reserve in one atomic step."""
        code, ahead = await self._reserve(
            keys=self._keys(coupon_id), args=[user_id, _epoch_ms(now)]
        )
        return GateAnswer(_CODES.get(int(code)), int(ahead))

    async def release(self, coupon_id: UUID, user_id: str) -> None:
        """Undo a reservation whose message never reached the broker."""
        await self._redis.srem(self._keys(coupon_id)[1], user_id)

    async def has_reserved(self, coupon_id: UUID, user_id: str) -> bool:
        return bool(await self._redis.sismember(self._keys(coupon_id)[1], user_id))

    async def is_loaded(self, coupon_id: UUID) -> bool:
        return bool(await self._redis.exists(self._keys(coupon_id)[0]))

    async def load(
        self, coupon_id: UUID, total: int, expires_at: datetime, holders: Iterable[str]
    ) -> None:
        """(Re)build a coupon's gate: holders first, meta last, so a half-built gate stays closed.

        Only adds: a concurrent rebuild or a reservation taken meanwhile is never undone.
        """
        meta, users, processed, missing = self._keys(coupon_id)
        holders = list(holders)
        for start in range(0, len(holders), _REBUILD_CHUNK):
            await self._redis.sadd(users, *holders[start : start + _REBUILD_CHUNK])
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(processed, len(holders), nx=True)
            pipe.hset(meta, mapping={"total": total, "expires_ms": _epoch_ms(expires_at)})
            pipe.delete(missing)
            await pipe.execute()

    async def mark_missing(self, coupon_id: UUID) -> None:
        """Remember briefly that a coupon does not exist, so unknown ids do not hammer PostgreSQL."""
        await self._redis.set(self._keys(coupon_id)[3], 1, ex=_MISSING_TTL_SECONDS)

    async def count_processed(self, processed_per_coupon: Mapping[UUID, int]) -> None:
        """Advance the per-coupon processed counters that ``queueSize`` is computed from."""
        if not processed_per_coupon:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for coupon_id, n in processed_per_coupon.items():
                pipe.incrby(self._keys(coupon_id)[2], n)
            await pipe.execute()

    async def ping(self) -> bool:
        return bool(await self._redis.ping())


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
