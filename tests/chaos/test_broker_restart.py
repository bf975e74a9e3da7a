"""The broker stops and restarts mid-sale: the API says 503 while it is away and recovers after.

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
from tests.chaos.harness import Sale, record, run_verify, users
from tests.stack import Stack, isolated_settings, wait_until

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture(loop_scope="session")
async def broker_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, TansuBroker]]:
    broker = TansuBroker().start()  # its own fixed port, kept across the restart
    settings = isolated_settings(broker.bootstrap, publish_timeout_ms=1500)
    stack = await Stack(settings, tmp_path).start(consumers=2)
    yield stack, broker
    await stack.stop()
    broker.stop()


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
    away = await sale.wave(stack, users("away", 30))
    assert away == {503: 30}, away
    r = await sale.press(stack, coupon, "away-0")
    assert r.json()["reason"] == "BROKER_UNAVAILABLE"
    assert (await stack.http.get("/readyz")).status_code == 503
    # 503 released the reservation: the user is not pending and may retry.
    assert (await stack.http.get(f"/api/coupons/{coupon}/issues/away-0")).status_code == 404

    broker.start()
    restarted = time.monotonic()
    await asyncio.to_thread(prepare, stack.settings)

    async def accepted_again() -> bool:
        return (await sale.press(stack, coupon, "probe")).status_code == 202

    await wait_until(accepted_again, 60, "the API to accept again", interval=0.5)
    recovered_s = round(time.monotonic() - restarted, 1)
    # The users refused while it was away retry successfully, alongside new ones.
    assert await sale.wave(stack, users("away", 30) + users("after", 150)) == {202: 180}
    await sale.drain(stack, timeout=120)
    assert await stack.outcomes(coupon) == {"ISSUED": 150 + 1 + 180}
    assert (await stack.http.get("/readyz")).status_code == 200
    report = await run_verify(stack.settings)
    record(
        capsys,
        "broker-restart",
        sale,
        report,
        started,
        answered_503=sale.answers[503],
        accepting_again_after_s=recovered_s,
    )
