"""Where a coupon is issued: one PostgreSQL transaction per batch, decided by the domain rules."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from app.adapters import postgres
from app.domain.codec import IssueRequest
from app.domain.decision import BatchPlan, decide_batch


async def issue_batch(pool: asyncpg.Pool, requests: Sequence[IssueRequest]) -> BatchPlan:
    """Issue a batch atomically; a redelivered request is recognised and changes nothing.

    The coupon rows are locked first, in a statement of their own, so what is read next (processed
    requests, holders) cannot change under us even if a zombie consumer still works the same
    partition: a statement's snapshot is taken when it starts, before any lock it waits for.
    Five round trips a batch (BEGIN, the lock, what was seen before, the rows with the counts,
    COMMIT): most of a batch's cost is per round trip, not per row (docs/performance.md).
    """
    async with postgres.transaction(pool) as conn:
        stocks = await postgres.lock_stocks(conn, sorted({r.coupon_id for r in requests}))
        processed, holders = await postgres.seen_before(
            conn, [r.request_id for r in requests], [(r.coupon_id, r.user_id) for r in requests]
        )
        plan = decide_batch(requests, stocks, holders, processed)
        # One timestamp for the rows and for the outcomes the API reads from Redis.
        processed_at = datetime.now(UTC)
        plan = dataclasses.replace(plan, processed_at=processed_at)
        await postgres.record_batch(conn, plan.decisions, processed_at, plan.issued_per_coupon)
    return plan


def processed_per_coupon(plan: BatchPlan) -> Counter[UUID]:
    """How many requests of each coupon reached a final outcome in this plan."""
    return Counter(d.request.coupon_id for d in plan.decisions)
