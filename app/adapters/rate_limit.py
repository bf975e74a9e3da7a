"""Fixed-window rate limits in Redis, shared by every API worker and replica."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

_WINDOW_SECONDS = 1


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``per_second`` hits per ``subject`` (e.g. "user:alice", "ip:10.0.0.1"); 0 = off."""

    subject: str
    per_second: int


class RateLimiter:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    async def exceeded(self, *limits: Limit) -> float | None:
        """Count one hit against each limit; seconds to wait if any is over, else None."""
        active = [lim for lim in limits if lim.per_second > 0]
        if not active:
            return None
        now = time.time()
        window = int(now) // _WINDOW_SECONDS
        async with self._redis.pipeline(transaction=False) as pipe:
            for lim in active:
                key = f"{self._prefix}:rl:{lim.subject}:{window}"
                pipe.incr(key)
                pipe.expire(key, _WINDOW_SECONDS * 2)
            counts = (await pipe.execute())[::2]
        if any(int(n) > lim.per_second for n, lim in zip(counts, active, strict=True)):
            return (window + 1) * _WINDOW_SECONDS - now
        return None
