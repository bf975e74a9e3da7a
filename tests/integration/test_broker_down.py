"""Broker away at the API: 503, the reservation is rolled back, and the user can retry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from app.adapters.redis_gate import RedisGate
from app.devstack import TansuBroker, prepare
from tests.stack import Stack, isolated_settings, wait_until


@pytest_asyncio.fixture(loop_scope="session")
async def own_broker_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, TansuBroker]]:
    broker = TansuBroker().start()
    stack = await Stack(
        isolated_settings(broker.bootstrap, publish_timeout_ms=1500), tmp_path
    ).start(consumers=0)
    yield stack, broker
    await stack.stop()
    broker.stop()


async def test_unacknowledged_publish_answers_503_and_releases_the_reservation(
    own_broker_stack: tuple[Stack, TansuBroker],
) -> None:
    stack, broker = own_broker_stack
    coupon_id = await stack.create_coupon(5)
    assert (await stack.request_issue(coupon_id, "early")).status_code == 202

    broker.stop()
    answer = await stack.request_issue(coupon_id, "unlucky")
    assert answer.status_code == 503
    assert answer.json() == {
        "success": False,
        "reason": "BROKER_UNAVAILABLE",
        "message": "Could not queue the request; please retry.",
    }
    import redis.asyncio as aioredis

    client = aioredis.from_url(stack.settings.redis_url)
    gate = RedisGate(client, stack.settings.redis_prefix)
    assert not await gate.has_reserved(uuid.UUID(coupon_id), "unlucky")
    assert await gate.has_reserved(uuid.UUID(coupon_id), "early")
    await client.aclose()
    http = stack.http
    assert http is not None
    assert (await http.get(f"/api/coupons/{coupon_id}/issues/unlucky")).status_code == 404
    assert (await http.get("/readyz")).status_code == 503

    # The broker comes back (memory storage: topics are re-created as a deployment would).
    broker.start()
    await asyncio.to_thread(prepare, stack.settings)

    async def retry_accepted() -> bool:
        return (await stack.request_issue(coupon_id, "unlucky")).status_code == 202

    await wait_until(retry_accepted, 30, "the retried request to be accepted", interval=0.5)
