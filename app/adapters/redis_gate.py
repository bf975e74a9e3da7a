"""Redis gate: the fast, atomic admission check in front of Kafka. A cache; PostgreSQL is the truth."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from uuid import UUID

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from app.domain.outcomes import GateOutcome

_CODES = {
    0: GateOutcome.ACCEPTED,
    1: GateOutcome.DUPLICATE,
    2: GateOutcome.SOLD_OUT,
    3: GateOutcome.EXPIRED,
    4: GateOutcome.NOT_FOUND,
    5: GateOutcome.RATE_LIMITED,
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


@dataclass(frozen=True, slots=True)
class GateSnapshot:
    """What the gate holds for one coupon (for invariant checks, not for the hot path)."""

    loaded: bool
    total: int | None
    holders: frozenset[str]


class RedisGate:
    """Per coupon: a holders hash {user: request id}, evaluated by one Lua script per press."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._reserve = client.register_script(_script("gate_reserve.lua"))
        self._release = client.register_script(_script("gate_release.lua"))

    def keys(self, coupon_id: UUID) -> tuple[str, str, str, str]:
        """The coupon's keys: meta, holders, processed counter, known-missing marker.

        One hash tag per coupon keeps them on one Redis Cluster slot (the script needs that).
        """
        base = self._base(coupon_id)
        return f"{base}:meta", f"{base}:holders", f"{base}:processed", f"{base}:missing"

    def _base(self, coupon_id: UUID) -> str:
        return f"{self._prefix}:{{{coupon_id}}}"

    async def reserve(
        self,
        coupon_id: UUID,
        user_id: str,
        request_id: UUID,
        now: datetime,
        presses_per_second: int = 0,
    ) -> GateAnswer:
        """Rate-limit, check and reserve in one atomic step (one round trip per press).

        A retry with the same request id is idempotent. ``presses_per_second`` limits one user's
        presses on this coupon (0: no limit).
        """
        keys, args = self._reserve_call(coupon_id, user_id, request_id, now, presses_per_second)
        code, ahead = await self._reserve(keys=keys, args=args)
        return GateAnswer(_CODES.get(int(code)), int(ahead))

    async def queue_reserve(
        self, pipe: Pipeline, coupon_id: UUID, user_id: str, request_id: UUID, now: datetime
    ) -> None:
        """Add a reserve to ``pipe`` (for measuring Redis's own ceiling with the real script)."""
        keys, args = self._reserve_call(coupon_id, user_id, request_id, now, 0)
        await self._reserve(keys=keys, args=args, client=pipe)

    def _reserve_call(
        self, coupon_id: UUID, user_id: str, request_id: UUID, now: datetime, limit: int
    ) -> tuple[list[str], list[str | int]]:
        now_ms = _epoch_ms(now)
        rate_key = f"{self._base(coupon_id)}:rl:{user_id}:{now_ms // 1000}"
        return [*self.keys(coupon_id), rate_key], [user_id, now_ms, str(request_id), limit]

    async def release(self, coupon_id: UUID, user_id: str, request_id: UUID) -> None:
        """Undo this request's reservation (its message never reached the broker)."""
        await self._release(keys=[self.keys(coupon_id)[1]], args=[user_id, str(request_id)])

    async def has_reserved(self, coupon_id: UUID, user_id: str) -> bool:
        return bool(await self._redis.hexists(self.keys(coupon_id)[1], user_id))

    async def snapshot(self, coupon_id: UUID) -> GateSnapshot:
        """Meta and every holder (HSCAN: never one blocking call on a large hash)."""
        meta, holders_key, _, _ = self.keys(coupon_id)
        total = await self._redis.hget(meta, "total")
        holders = {
            k.decode() if isinstance(k, bytes) else str(k)
            async for k, _ in self._redis.hscan_iter(holders_key, count=1000)
        }
        return GateSnapshot(
            total is not None, None if total is None else int(total), frozenset(holders)
        )

    async def is_loaded(self, coupon_id: UUID) -> bool:
        return bool(await self._redis.exists(self.keys(coupon_id)[0]))

    async def load(
        self,
        coupon_id: UUID,
        total: int,
        expires_at: datetime,
        holders: Iterable[tuple[str, UUID]],
    ) -> None:
        """(Re)build a coupon's gate: holders first, meta last, so a half-built gate stays closed.

        Only adds: a concurrent rebuild or a reservation taken meanwhile is never undone.
        """
        meta, users, processed, missing = self.keys(coupon_id)
        pairs = {user: str(request_id) for user, request_id in holders}
        items = list(pairs.items())
        for start in range(0, len(items), _REBUILD_CHUNK):
            await self._redis.hset(users, mapping=dict(items[start : start + _REBUILD_CHUNK]))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(processed, len(pairs), nx=True)
            pipe.hset(meta, mapping={"total": total, "expires_ms": _epoch_ms(expires_at)})
            pipe.delete(missing)
            await pipe.execute()

    async def mark_missing(self, coupon_id: UUID) -> None:
        """Remember briefly that a coupon does not exist, so unknown ids do not hammer PostgreSQL."""
        await self._redis.set(self.keys(coupon_id)[3], 1, ex=_MISSING_TTL_SECONDS)

    async def record_processed(
        self,
        processed_per_coupon: Mapping[UUID, int],
        issued: Iterable[tuple[UUID, str, UUID]],
    ) -> None:
        """After a DB commit: advance the counters ``queueSize`` comes from, and make sure every
        new holder is in the gate (after Redis lost it, a rebuild only knew the DB's holders)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for coupon_id, n in processed_per_coupon.items():
                pipe.incrby(self.keys(coupon_id)[2], n)
            for coupon_id, user_id, request_id in issued:
                pipe.hsetnx(self.keys(coupon_id)[1], user_id, str(request_id))
            await pipe.execute()

    async def ping(self) -> bool:
        return bool(await self._redis.ping())


def _script(name: str) -> str:
    return (resources.files("app.adapters") / name).read_text()


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
