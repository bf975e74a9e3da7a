"""Poison messages and failing handlers: DLQ after the attempts, the partition keeps flowing, replay works."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

from app.adapters import redis_client
from app.adapters.dead_letters import list_dead_letters
from app.adapters.kafka import make_producer
from app.adapters.redis_gate import RedisGate
from app.local.stack import child_env
from app.verify import verify
from harness import wait_until
from tests.stack import Stack, holding_coupon_rows, refuse_poison_users


def cli(stack: Stack, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=child_env(stack.settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


async def _letters_for(stack: Stack, coupon_id: str) -> list:  # type: ignore[type-arg]
    entries = await list_dead_letters(stack.settings.kafka_bootstrap, stack.settings.dlq_topic)
    return [e for e in entries if e.letter.original_key == coupon_id.encode()]


async def test_poison_and_failing_messages_are_dead_lettered_and_replayable(
    stack_on_each_redis: Stack,
) -> None:
    stack = stack_on_each_redis
    http = stack.http
    assert http is not None
    coupon_id = await stack.create_coupon(6)
    cid = uuid.UUID(coupon_id)
    schema = stack.settings.db_schema
    # A real failure inside the issue transaction, for one user only.
    await refuse_poison_users(stack.pool, schema)
    client = redis_client.connect(stack.settings)
    gate = RedisGate(client, stack.settings.redis_prefix)
    try:
        producer = make_producer(stack.settings.kafka_bootstrap, linger_ms=0, timeout_ms=10_000)
        await producer.start()
        await (await producer.send(stack.settings.topic, b"\x00not json", key=coupon_id.encode()))
        await producer.stop()
        # The coupon's row is held while the presses are made: the poisoned press cannot be
        # dead-lettered (giving its coupon back) before the 7th press has been refused.
        async with holding_coupon_rows(stack, [coupon_id]):
            # The poisoned user presses like everybody else: the gate reserves one of the 6.
            assert (await stack.request_issue(coupon_id, "poison-1")).status_code == 202
            # Requests behind it on the same partition still get through.
            answers = await asyncio.gather(
                *(stack.request_issue(coupon_id, f"fine-{i}") for i in range(5))
            )
            assert all(a.status_code == 202 for a in answers)
            assert (await stack.request_issue(coupon_id, "too-late")).status_code == 410
        await stack.wait_processed(coupon_id, 5)

        async def two_letters() -> list:  # type: ignore[type-arg]
            letters = await _letters_for(stack, coupon_id)
            return letters if len(letters) == 2 else []

        letters = sorted(
            (await wait_until(two_letters, 60, "two dead letters")), key=lambda e: e.letter.offset
        )
        garbage, failing = (e.letter for e in letters)
        assert garbage.original_value == b"\x00not json" and garbage.attempts == 1
        assert "undecodable" in garbage.error
        assert failing.attempts == 3 and "refused by test trigger" in failing.error
        assert failing.topic == stack.settings.topic
        assert await stack.outcomes(coupon_id) == {"ISSUED": 5}

        # The user sees a final outcome, and the coupon goes back to the gate.
        async def failed_status() -> dict:  # type: ignore[type-arg]
            body = (await http.get(f"/api/coupons/{coupon_id}/issues/poison-1")).json()
            return body if body.get("status") == "FAILED" else {}

        status = await wait_until(failed_status, 30, "the poisoned user's FAILED status")
        assert status["reason"] == "DEAD_LETTERED"
        assert not await gate.has_reserved(cid, "poison-1")
        assert len((await gate.snapshot(cid)).holders) == 5  # stock returned to the gate
        listing = cli(stack, "dlq", "list")
        assert "refused by test trigger" in listing and "attempts=3" in listing
    finally:
        await stack.pool.execute(f'DROP TRIGGER refuse_poison ON "{schema}".issue_requests')

    # The cause is fixed: replay sends the dead letters back and the poison user is issued (the
    # recorded failure does not make the replay an "already processed" no-op).
    assert "replayed 2 dead letter" in cli(stack, "dlq", "replay")
    await stack.wait_processed(coupon_id, 6)
    assert await stack.outcomes(coupon_id) == {"ISSUED": 6}
    wait = {"waitSeconds": 10}  # the row commits before Redis hears of the outcome
    status = (await http.get(f"/api/coupons/{coupon_id}/issues/poison-1", params=wait)).json()
    assert status["status"] == "ISSUED"

    async def gate_knows_the_holder() -> bool:
        return await gate.has_reserved(cid, "poison-1")

    await wait_until(gate_knows_the_holder, 30, "the replayed holder back in the gate")
    await client.aclose()
    report = await verify(stack.settings, cid)
    assert report.ok and report.coupons[0].stranded == 0, report.violations

    # The undecodable one is still poison: it comes back to the DLQ (a third letter). A second
    # replay resends only that new letter, never the two already replayed.
    async def three_letters() -> bool:
        return len(await _letters_for(stack, coupon_id)) == 3

    await wait_until(three_letters, 60, "the undecodable message to be dead-lettered again")
    assert "replayed 1 dead letter" in cli(stack, "dlq", "replay")
