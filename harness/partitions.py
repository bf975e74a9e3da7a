"""Coupon ids that reach every partition of the request topic (so every consumer has work)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable

from app.adapters.kafka import partition_for


def partition_of(coupon_id: str, partitions: int) -> int:
    """The partition the producer's default partitioner picks for a coupon id key."""
    return partition_for(coupon_id.encode(), partitions)


def coupon_ids_covering(partitions: int, per_partition: int = 1) -> list[str]:
    """Fresh coupon ids, ``per_partition`` keyed to each partition."""
    wanted = {p: per_partition for p in range(partitions)}
    chosen: list[str] = []
    while any(wanted.values()):
        cid = str(uuid.uuid4())
        p = partition_of(cid, partitions)
        if wanted[p]:
            wanted[p] -= 1
            chosen.append(cid)
    return chosen


async def create_covering(
    create: Callable[[], Awaitable[str]], partitions: int, per_partition: int = 1
) -> list[str]:
    """Create coupons (``create`` returns the new id) until each partition has ``per_partition``.

    The ids come back ordered by partition; fails after 50 attempts per wanted coupon.
    """
    by_partition: dict[int, list[str]] = defaultdict(list)
    for _ in range(50 * partitions * per_partition):
        cid = await create()
        mine = by_partition[partition_of(cid, partitions)]
        if len(mine) < per_partition:
            mine.append(cid)
        if sum(len(v) for v in by_partition.values()) == partitions * per_partition:
            return [c for p in sorted(by_partition) for c in by_partition[p]]
    raise RuntimeError(f"could not cover {partitions} partitions with coupons")
