"""The broker stops and restarts mid-sale: presses while it is away are never called rolled back,
the reconciler settles them once it is back, and the sale recovers.

tansu keeps no data across a restart, so this is about availability, not durability: the sale is
drained before the broker stops, and the topics are re-created as a deployment's job would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from app.devstack import TansuBroker, prepare
from app.reconciler.reconcile import reconcile_once
from harness import wait_until
from tests.chaos.harness import Sale, record, run_verify, users
from tests.stack import Stack, stack_with_own_broker

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture(loop_scope="session")
async def broker_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, TansuBroker]]:
    async with stack_with_own_broker(
        tmp_path, 2, publish_timeout_ms=1500, reconcile_min_age_s=2
    ) as pair:
        yield pair


async def test_broker_away_answers_503_and_the_sale_recovers_after(
    broker_stack: tuple[Stack, TansuBroker], capsys: pytest.CaptureFixture[str]
) -> None:
    stack, broker = broker_stack
    assert stack.http is not None
    started, stock = time.monotonic(), 400
    sale = Sale([await stack.create_coupon(stock)])
    coupon = sale.coupons[0]
    assert await sale.wave(stack, users("before", 150)) == {202: 150}
    await sale.drain(stack)

    broker.stop()
    away = await asyncio.gather(*(sale.press(stack, coupon, u) for u in users("away", 30)))
    # Sent to a broker that never answered: not known to be lost, so never called rolled back.
    assert {(r.status_code, r.json()["status"]) for r in away} == {(202, "UNCONFIRMED")}
    assert (await stack.http.get("/readyz")).status_code == 503
    status = await stack.http.get(f"/api/coupons/{coupon}/issues/away-0")
    assert status.json()["status"] == "PENDING"

    broker.start()
    restarted = time.monotonic()
    await asyncio.to_thread(prepare, stack.settings)

    async def accepted_again() -> bool:
        return (await sale.press(stack, coupon, "probe")).status_code == 202

    await wait_until(accepted_again, 60, "the API to accept again", interval=0.5)
    recovered_s = round(time.monotonic() - restarted, 1)

    # The broker came back empty: those presses never reached the queue. The reconciler settles
    # them (FAILED, NOT_QUEUED) and gives their reservations back.
    async def settled() -> bool:
        await reconcile_once(stack.settings, confirm_after_s=0.5)
        for user in users("away", 30):
            body = (await stack.http.get(f"/api/coupons/{coupon}/issues/{user}")).json()
            if (body["status"], body.get("reason")) != ("FAILED", "NOT_QUEUED"):
                return False
        return True

    await wait_until(settled, 60, "the reconciler to settle the unconfirmed presses", 1)
    # The users whose presses failed press again, alongside new ones.
    assert await sale.wave(stack, users("away", 30) + users("after", 150)) == {202: 180}
    await stack.wait_processed(coupon, 150 + 1 + 180, timeout=120)
    assert await stack.outcomes(coupon) == {"ISSUED": 150 + 1 + 180}
    assert (await stack.http.get("/readyz")).status_code == 200
    report = await run_verify(stack.settings)
    record(
        capsys,
        "broker-restart",
        sale,
        report,
        started,
        unconfirmed_then_settled=30,
        accepting_again_after_s=recovered_s,
    )
