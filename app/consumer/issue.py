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

    The coupon rows are locked first, so what is read next (processed requests, holders) cannot
    change under us even if a zombie consumer still works the same partition.
    """
    async with postgres.transaction(pool) as conn:
        stocks = await postgres.lock_stocks(conn, sorted({r.coupon_id for r in requests}))
        processed = await postgres.processed_request_ids(conn, [r.request_id for r in requests])
        holders = await postgres.holders_among(conn, [(r.coupon_id, r.user_id) for r in requests])
        plan = decide_batch(requests, stocks, holders, processed)
        # One timestamp for the rows and for the outcomes the API reads from Redis.
        plan = dataclasses.replace(plan, processed_at=datetime.now(UTC))
        await postgres.record_decisions(conn, plan.decisions, plan.processed_at)
        await postgres.advance_issued(conn, plan.issued_per_coupon)
    return plan


def processed_per_coupon(plan: BatchPlan) -> Counter[UUID]:
    """How many requests of each coupon reached a final outcome in this plan."""
    return Counter(d.request.coupon_id for d in plan.decisions)
