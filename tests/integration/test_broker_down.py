"""Broker away at the API: an unacknowledged press is never reported as rolled back.

It is answered 202 UNCONFIRMED with its request id, the reservation is kept, the status shows
PENDING; once the broker is back (Apache Kafka, from its log dirs) what it had acknowledged is
still queued and issued, and the reconciler settles only what never reached the queue (FAILED,
NOT_QUEUED, reservation released); the user may press again.
"""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.adapters.kafka import running
from app.adapters.kafka_lag import read_lag
from app.adapters.redis_gate import RedisGate
from app.config import Settings
from app.local.kafka import KafkaNode
from app.reconciler.reconcile import reconcile_once
from harness import partition_of, wait_until
from tests.stack import Stack, own_broker_fixture

own_broker_stack = own_broker_fixture(
    "own_broker_stack", 0, publish_timeout_ms=1500, delivery_timeout_ms=1500, reconcile_min_age_s=2
)


async def test_an_unacknowledged_press_keeps_its_reservation_until_settled(
    own_broker_stack: tuple[Stack, KafkaNode],
) -> None:
    stack, broker = own_broker_stack
    http = stack.http
    assert http is not None
    coupon_id = await stack.create_coupon(5)
    early = await stack.request_issue(coupon_id, "early")
    assert early.status_code == 202 and early.json()["status"] == "QUEUED"

    broker.stop()
    answer = await stack.request_issue(coupon_id, "unlucky")
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["success"] is True and body["status"] == "UNCONFIRMED"
    assert "not confirmed" in body["message"]
    client = aioredis.from_url(stack.settings.redis_url)
    gate = RedisGate(client, stack.settings.redis_prefix)
    assert await gate.holding_request(uuid.UUID(coupon_id), "unlucky") == uuid.UUID(
        body["requestId"]
    )
    status = (await http.get(f"/api/coupons/{coupon_id}/issues/unlucky")).json()
    assert status["status"] == "PENDING" and status["requestId"] == body["requestId"]
    assert (await http.get("/readyz")).status_code == 503
    # Nothing can be told while the broker is away: the reconciler settles nothing.
    assert (await reconcile_once(stack.settings, confirm_after_s=0.1)).skipped

    # The broker comes back from its log dirs: the acknowledged press is still queued; the
    # unconfirmed one never reached it (its batch expired unsent), so only that one is stranded.
    broker.start()
    assert (await reconcile_once(stack.settings, confirm_after_s=0.1)).released == []
    stack.add_consumer()
    await stack.wait_processed(coupon_id, 1)
    assert await stack.outcomes(coupon_id) == {"ISSUED": 1}

    async def settled() -> set[str]:
        report = await reconcile_once(stack.settings, confirm_after_s=0.5)
        return {r.user_id for r in report.released}

    released = await wait_until(settled, 60, "the reconciler to settle the unconfirmed press")
    assert released == {"unlucky"}
    assert not await gate.has_reserved(uuid.UUID(coupon_id), "unlucky")
    assert await gate.has_reserved(uuid.UUID(coupon_id), "early")
    await client.aclose()
    status = (await http.get(f"/api/coupons/{coupon_id}/issues/unlucky")).json()
    assert (status["status"], status["reason"]) == ("FAILED", "NOT_QUEUED")
    early_status = (await http.get(f"/api/coupons/{coupon_id}/issues/early")).json()
    assert early_status["status"] == "ISSUED"

    async def retry_accepted() -> str | None:
        r = await stack.request_issue(coupon_id, "unlucky")
        ok = r.status_code == 202 and r.json()["status"] == "QUEUED"
        return str(r.json()["requestId"]) if ok else None

    retry = await wait_until(retry_accepted, 30, "the user's new press to be queued", interval=0.5)
    # The consumer is running: the new press may already be issued when the status is read.
    status = (await http.get(f"/api/coupons/{coupon_id}/issues/unlucky")).json()
    assert status["requestId"] == retry and status["status"] in ("PENDING", "ISSUED"), status


async def test_the_reconciler_never_releases_a_queued_request(
    own_broker_stack: tuple[Stack, KafkaNode],
) -> None:
    stack, _ = own_broker_stack  # no consumer: whatever is accepted stays queued (lag > 0)
    coupon_id = await stack.create_coupon(5)
    queued = await stack.request_issue(coupon_id, "waiting")
    assert queued.status_code == 202 and queued.json()["status"] == "QUEUED"
    eager = stack.settings.model_copy(update={"reconcile_min_age_s": 0.001})
    report = await reconcile_once(eager, confirm_after_s=0.1)
    assert report.skipped is None and report.released == []
    client = aioredis.from_url(stack.settings.redis_url)
    gate = RedisGate(client, stack.settings.redis_prefix)
    assert await gate.has_reserved(uuid.UUID(coupon_id), "waiting")
    await client.aclose()


async def _commit_group_offset(settings: Settings, tp: TopicPartition, offset: int) -> None:
    """Set the consumer group's committed offset on ``tp`` (the group has no member now)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    async with running(consumer):
        consumer.assign([tp])
        await consumer.commit({tp: offset})


async def test_a_settled_press_delivered_afterwards_is_not_issued(
    own_broker_stack: tuple[Stack, KafkaNode],
) -> None:
    """The reconciler settles a press it cannot see queued, and the press is delivered later
    all the same (as when a leader left without its followers appended it uncommitted, and
    commits it once they return: tests/chaos/test_broker_replication.py): the user was told
    FAILED and the reservation given back, so the consumer must not issue it."""
    stack, _ = own_broker_stack  # no consumer yet
    settings = stack.settings
    http = stack.http
    assert http is not None
    coupon_id = await stack.create_coupon(5)
    late = await stack.request_issue(coupon_id, "late")
    assert late.status_code == 202 and late.json()["status"] == "QUEUED"
    request_id = uuid.UUID(late.json()["requestId"])
    tp = TopicPartition(settings.topic, partition_of(coupon_id, settings.partitions))
    end = next(
        p.log_end
        for p in (
            await read_lag(settings.kafka_bootstrap, settings.topic, settings.consumer_group)
        ).partitions
        if p.partition == tp.partition
    )
    assert end >= 1

    # The group is past it, as if the press were not on the log: no lag, so it is settled.
    await _commit_group_offset(settings, tp, end)
    eager = settings.model_copy(update={"reconcile_min_age_s": 0.001})
    released = await wait_until(
        lambda: _released(eager), 30, "the reconciler to settle the press it cannot see"
    )
    assert released == {request_id}
    status = (await http.get(f"/api/coupons/{coupon_id}/issues/late")).json()
    assert (status["status"], status["reason"]) == ("FAILED", "NOT_QUEUED")

    # Now it is delivered after all.
    await _commit_group_offset(settings, tp, end - 1)
    stack.add_consumer()

    async def consumed() -> bool:
        lag = await read_lag(settings.kafka_bootstrap, settings.topic, settings.consumer_group)
        return all(p.committed == p.log_end for p in lag.partitions if p.partition == tp.partition)

    await wait_until(consumed, 60, "the consumer to read past the settled press", interval=0.5)
    assert await stack.outcomes(coupon_id) == {}, "a press settled FAILED was issued afterwards"
    status = (await http.get(f"/api/coupons/{coupon_id}/issues/late")).json()
    assert (status["status"], status["reason"]) == ("FAILED", "NOT_QUEUED")


async def _released(settings: Settings) -> set[uuid.UUID]:
    report = await reconcile_once(settings, confirm_after_s=0.1)
    return {r.request_id for r in report.released}
