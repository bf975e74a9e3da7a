"""Fixed-window rate limits in Redis, shared by every API worker and replica.

The per-user limit lives inside the gate script (one round trip per press); this is for limits
that span coupons, such as per client IP.
"""

from __future__ import annotations

import time

from app.adapters.redis_client import RedisClient

_WINDOW_SECONDS = 1


class RateLimiter:
    def __init__(self, client: RedisClient, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    async def exceeded(self, subject: str, per_second: int) -> float | None:
        """Count one hit for ``subject`` (e.g. "ip:10.0.0.1"); seconds to wait if over, else None.

        ``per_second`` 0 means no limit, and costs no round trip.
        """
        if per_second <= 0:
            return None
        now = time.time()
        window = int(now) // _WINDOW_SECONDS
        key = f"{self._prefix}:rl:{subject}:{window}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, _WINDOW_SECONDS * 2)
            hits, _ = await pipe.execute()
        if int(hits) > per_second:
            return (window + 1) * _WINDOW_SECONDS - now
        return None
