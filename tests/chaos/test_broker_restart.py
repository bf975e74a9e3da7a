"""The broker crashes mid-sale with presses still queued: Apache Kafka keeps what it acknowledged.

The broker is SIGKILLed while 150 accepted presses sit in the topic unconsumed (the coupon's row
is held, so no batch commits), then restarted from its log dirs. Every acknowledged press is
then issued, the reconciler releases nothing, and presses made while it was down are answered
503 or 202 UNCONFIRMED, never a QUEUED 202 that is then lost.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from app.local.kafka import KafkaNode
from app.reconciler.reconcile import reconcile_once
from harness import wait_until
from tests.chaos.harness import Sale, record, run_verify, users
from tests.stack import Stack, holding_coupon_rows, own_broker_fixture

pytestmark = pytest.mark.slow


broker_stack = own_broker_fixture(
    "broker_stack", 2, publish_timeout_ms=1500, delivery_timeout_ms=1500, reconcile_min_age_s=2
)


async def test_a_broker_killed_mid_sale_loses_no_acknowledged_press(
    broker_stack: tuple[Stack, KafkaNode], capsys: pytest.CaptureFixture[str]
) -> None:
    stack, broker = broker_stack
    assert stack.http is not None
    started, stock = time.monotonic(), 400
    sale = Sale([await stack.create_coupon(stock)])
    coupon = sale.coupons[0]

    async with holding_coupon_rows(stack, sale.coupons):
        assert await sale.wave(stack, users("before", 150)) == {202: 150}
        assert await stack.processed(coupon) == 0  # all 150 are only in the broker's log
        broker.kill()
        away = await asyncio.gather(*(sale.press(stack, coupon, u) for u in users("away", 30)))
        answers = {(r.status_code, r.json().get("status")) for r in away}
        assert answers <= {(503, None), (202, "UNCONFIRMED")}, answers
        assert (await stack.http.get("/readyz")).status_code == 503
        broker.restart()
        restarted = time.monotonic()

        async def accepted_again() -> bool:
            return (await sale.press(stack, coupon, "probe")).status_code == 202

        await wait_until(accepted_again, 60, "the API to accept again", interval=0.5)
        recovered_s = round(time.monotonic() - restarted, 1)

    # Every press the broker acknowledged before it died is issued: nothing to settle.
    await stack.wait_processed(coupon, 150 + 1, timeout=120)
    issued = await stack.pool.fetch(
        "SELECT user_id FROM issue_requests WHERE coupon_id = $1 AND status = 'ISSUED'",
        uuid.UUID(coupon),
    )
    assert {*users("before", 150), "probe"} <= {r["user_id"] for r in issued}
    assert set(await stack.outcomes(coupon)) == {"ISSUED"}
    for _ in range(2):  # two passes: a suspect is released only on its second sighting
        settled = await reconcile_once(stack.settings, confirm_after_s=0.1)
        released = {r.user_id for r in settled.released}
        assert not released & (set(users("before", 150)) | {"probe"}), released

    # The presses made while it was down: each ends ISSUED (delivered once it was back) or, for
    # one that never reached it, FAILED / NOT_QUEUED once settled. None stays PENDING.
    unconfirmed = [u for u, r in zip(users("away", 30), away, strict=True) if r.status_code == 202]

    async def every_one_settled() -> bool:
        await reconcile_once(stack.settings, confirm_after_s=0.5)
        assert stack.http is not None  # as asserted above: a closure does not keep the narrowing
        for user in unconfirmed:
            body = (await stack.http.get(f"/api/coupons/{coupon}/issues/{user}")).json()
            if body["status"] not in {"ISSUED", "FAILED"}:
                return False
        return True

    await wait_until(every_one_settled, 60, "every unconfirmed press to end", 1)
    assert (await stack.http.get("/readyz")).status_code == 200
    report = await run_verify(stack.settings)
    record(
        capsys,
        "broker-sigkill",
        sale,
        report,
        started,
        queued_when_killed=150,
        lost=0,
        answered_while_down=sorted(f"{c}" for c, _ in answers),
        accepting_again_after_s=recovered_s,
    )
