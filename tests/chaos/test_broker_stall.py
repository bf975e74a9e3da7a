"""The broker stalls (SIGSTOP) mid-sale, then resumes.

Stalled for longer than the publish timeout: a press whose ack does not come in time may still
be appended when the broker wakes up, so the API must never call it rolled back: it answers 202
UNCONFIRMED and keeps the reservation. After the stall, every such press ends in one final
outcome (issued if it landed, FAILED NOT_QUEUED if the reconciler finds it never did), nobody
told "failed" holds a coupon, and no reservation is left over the stock or without an outcome.

Stalled for longer than ``COUPON_RECONCILE_MIN_AGE_S``: the reconciler may settle those presses
as soon as it can read the broker, so none of them may be appended when it wakes up (the topic
refuses a record older than the delivery timeout): each ends FAILED NOT_QUEUED, none is ever
issued or shown ISSUED.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import httpx
import pytest

from app.local.kafka import KafkaNode
from app.reconciler.reconcile import reconcile_once
from harness import wait_until
from tests.chaos.harness import Sale, record, run_verify, topic_request_ids, users
from tests.stack import Stack, own_broker_fixture

pytestmark = pytest.mark.slow
FINAL = {"ISSUED", "REJECTED", "FAILED"}


stall_stack = own_broker_fixture(
    "stall_stack", 2, publish_timeout_ms=1000, delivery_timeout_ms=2000, reconcile_min_age_s=3
)


async def _status(stack: Stack, coupon: str, user: str) -> dict[str, str]:
    assert stack.http is not None
    return dict((await stack.http.get(f"/api/coupons/{coupon}/issues/{user}")).json())


async def test_a_stalled_broker_never_turns_an_issued_press_into_a_failed_one(
    stall_stack: tuple[Stack, KafkaNode], capsys: pytest.CaptureFixture[str]
) -> None:
    stack, broker = stall_stack
    assert broker.process is not None
    started, stock = time.monotonic(), 60
    sale = Sale([await stack.create_coupon(stock)])
    coupon = sale.coupons[0]
    await sale.wave(stack, users("before", 20))
    await sale.drain(stack)

    broker.process.popen.send_signal(signal.SIGSTOP)
    try:
        stalled_at = time.monotonic()
        answers = await asyncio.gather(
            *(sale.press(stack, coupon, u) for u in users("stalled", 60))
        )
        stalled_for = time.monotonic() - stalled_at
    finally:
        broker.process.popen.send_signal(signal.SIGCONT)
    assert stalled_for > stack.settings.publish_timeout_ms / 1000
    told: dict[str, set[str]] = {"UNCONFIRMED": set(), "QUEUED": set(), "FAILED": set()}
    for user, answer in zip(users("stalled", 60), answers, strict=True):
        body = answer.json()
        if answer.status_code == 202:
            told[body["status"]].add(user)
        elif answer.status_code == 503:
            assert body["reason"] == "BROKER_UNAVAILABLE", body
            told["FAILED"].add(user)
        else:
            assert (answer.status_code, body["reason"]) == (410, "SOLD_OUT"), body
    assert told["UNCONFIRMED"], "the stall did not outlast the publish timeout"
    await sale.wave(stack, users("after", 20))

    kept = sale.accepted_users[coupon]

    async def everyone_settled() -> bool:
        await reconcile_once(stack.settings, confirm_after_s=0.5)
        statuses = [(await _status(stack, coupon, u)).get("status") for u in kept]
        return all(s in FINAL for s in statuses)

    await wait_until(everyone_settled, 120, "every accepted press to reach a final outcome", 1)

    outcomes = await stack.outcomes(coupon)
    assert outcomes.get("ISSUED", 0) <= stock
    for user in told["FAILED"]:  # told it failed: must not hold the coupon
        assert (await _status(stack, coupon, user)).get("status") != "ISSUED"
    settled = {u: (await _status(stack, coupon, u)) for u in told["UNCONFIRMED"]}
    landed = sum(s["status"] in ("ISSUED", "REJECTED") for s in settled.values())
    not_queued = sum(s.get("reason") == "NOT_QUEUED" for s in settled.values())
    assert landed + not_queued == len(told["UNCONFIRMED"])
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        assert (await http.get("/readyz")).status_code == 200
    report = await run_verify(stack.settings)  # no stranded reservation, gate within stock
    record(
        capsys,
        "broker-stalled",
        sale,
        report,
        started,
        unconfirmed=len(told["UNCONFIRMED"]),
        unconfirmed_landed=landed,
        unconfirmed_not_queued=not_queued,
        told_failed=len(told["FAILED"]),
        stalled_s=round(stalled_for, 1),
    )


async def test_a_broker_stalled_past_the_reconcilers_minimum_age_appends_no_settled_press(
    stall_stack: tuple[Stack, KafkaNode], capsys: pytest.CaptureFixture[str]
) -> None:
    stack, broker = stall_stack
    settings = stack.settings
    started = time.monotonic()
    sale = Sale([await stack.create_coupon(100)])
    coupon = sale.coupons[0]
    assert await sale.wave(stack, users("before", 10)) == {202: 10}
    await sale.drain(stack)

    broker.pause()
    try:
        stalled_at = time.monotonic()
        answers = await asyncio.gather(
            *(sale.press(stack, coupon, u) for u in users("stalled", 20))
        )
        answered_at = time.monotonic()
        # The reconciler runs meanwhile, as the lag exporter does: it cannot read the broker.
        during = await asyncio.wait_for(reconcile_once(settings, confirm_after_s=0.5), 60)
        await wait_until(
            lambda: time.monotonic() - answered_at > settings.reconcile_min_age_s + 1,
            60,
            "the stall to outlast the reconciler's minimum age",
        )
        stalled_for = time.monotonic() - stalled_at
    finally:
        broker.resume()
    assert during.skipped and not during.released, during
    told = {(a.status_code, a.json().get("status")) for a in answers}
    assert told <= {(202, "UNCONFIRMED"), (503, None)}, told  # never QUEUED: nothing was acked
    held = {
        u: uuid.UUID(a.json()["requestId"])
        for u, a in zip(users("stalled", 20), answers, strict=True)
        if a.status_code == 202
    }
    assert held, "the stall did not outlast the publish timeout"

    async def all_settled() -> bool:
        await reconcile_once(settings, confirm_after_s=0.5)
        shown = [(await _status(stack, coupon, u)).get("status") for u in held]
        return all(s in FINAL for s in shown)

    await wait_until(all_settled, 120, "every unconfirmed press to reach its outcome", 1)
    # Presses made after the stall, on the same partition, are issued: the consumers have read
    # past anything the broker could have appended on waking up.
    assert await sale.wave(stack, users("after", 10)) == {202: 10}
    await stack.wait_processed(coupon, 20, timeout=90)

    for user in held:
        shown = await _status(stack, coupon, user)
        assert (shown["status"], shown.get("reason")) == ("FAILED", "NOT_QUEUED"), (user, shown)
    issued = await stack.pool.fetchval(
        "SELECT count(*) FROM issue_requests WHERE request_id = ANY($1)", list(held.values())
    )
    assert issued == 0, "a press settled FAILED was processed afterwards"
    on_topic = await topic_request_ids(settings)
    assert not set(held.values()) & set(on_topic), "a settled press was appended after the stall"
    assert await stack.outcomes(coupon) == {"ISSUED": 20}
    report = await run_verify(settings)
    record(
        capsys,
        "broker-stalled-past-min-age",
        sale,
        report,
        started,
        unconfirmed=len(held),
        settled_not_queued=len(held),
        appended_after_settled=0,
        stalled_s=round(stalled_for, 1),
    )
