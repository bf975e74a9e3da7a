"""A consumer SIGKILLed in the middle of a batch: survivors take over, the end state is exact."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from harness import wait_until
from tests.stack import (
    Stack,
    consumers_waiting_on_locks,
    coupons_on_every_partition,
    holding_coupon_rows,
    isolated_settings,
)

STOCK = 60
USERS = 100


@pytest_asyncio.fixture(loop_scope="session")
async def stack(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Stack]:
    s = await Stack(isolated_settings(kafka_bootstrap), tmp_path).start(consumers=3)
    yield s
    await s.stop()


async def test_sigkill_mid_batch_loses_nothing_and_duplicates_nothing(stack: Stack) -> None:
    coupons = await coupons_on_every_partition(stack, STOCK)
    ids = [uuid.UUID(c) for c in coupons]

    # Hold every coupon row: each consumer's batch blocks inside its transaction.
    async with holding_coupon_rows(stack, coupons):
        presses = [(c, f"u{i}") for c in coupons for i in range(USERS)]
        answers = await asyncio.gather(*(stack.request_issue(c, u) for c, u in presses))
        accepted = sum(a.status_code == 202 for a in answers)
        assert accepted == STOCK * len(coupons)

        async def all_partitions_mid_batch() -> bool:
            return await consumers_waiting_on_locks(stack) >= stack.settings.partitions

        await wait_until(
            all_partitions_mid_batch, 60, "every partition's batch to block mid-transaction"
        )
        victim = stack.consumers[0]
        victim.stop(signal.SIGKILL)
        assert victim.popen.returncode == -signal.SIGKILL

    for coupon_id in coupons:
        await stack.wait_processed(coupon_id, STOCK, timeout=90)
    for coupon_id in coupons:
        assert await stack.outcomes(coupon_id) == {"ISSUED": STOCK}
    duplicates = await stack.pool.fetchval(
        "SELECT count(*) FROM (SELECT coupon_id, user_id FROM issue_requests WHERE status = 'ISSUED'"
        " GROUP BY 1, 2 HAVING count(*) > 1) d"
    )
    assert duplicates == 0
    issued = await stack.pool.fetch(
        "SELECT issued_quantity FROM coupons WHERE id = ANY($1::uuid[])", ids
    )
    assert [r["issued_quantity"] for r in issued] == [STOCK] * len(coupons)
    # the survivors now own every partition
    await stack.wait_for_assignment(expected_members=2)
