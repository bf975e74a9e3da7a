"""The checker itself: each invariant, broken on purpose, is reported; a healthy coupon is not."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest_asyncio
import redis.asyncio as aioredis

from app.adapters.kafka import make_producer
from app.adapters.redis_gate import RedisGate
from app.config import Settings
from app.domain.codec import IssueRequest, encode
from app.domain.dead_letter import DeadLetter, encode_dead_letter
from app.local.processes import free_port
from app.local.stack import prepare
from app.verify import verify
from harness import partition_of
from tests.chaos.harness import cli
from tests.stack import isolated_settings

NOW = datetime.now(UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def broken(kafka_bootstrap: str) -> AsyncIterator[tuple[Settings, asyncpg.Connection]]:
    """A migrated schema whose database safety nets are removed, so bad states can be written."""
    settings = isolated_settings(kafka_bootstrap)
    await asyncio.to_thread(prepare, settings)
    conn = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": settings.db_schema}
    )
    check = await conn.fetchval(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'coupons'::regclass"
        " AND pg_get_constraintdef(oid) LIKE '%issued_quantity <= total_quantity%'"
    )
    await conn.execute(f'ALTER TABLE coupons DROP CONSTRAINT "{check}"')
    await conn.execute("DROP INDEX issue_requests_one_per_user")
    yield settings, conn
    await conn.execute(f'DROP SCHEMA "{settings.db_schema}" CASCADE')
    await conn.close()


class World:
    def __init__(self, settings: Settings, conn: asyncpg.Connection, gate: RedisGate) -> None:
        self.settings, self.conn, self.gate = settings, conn, gate

    async def coupon(
        self,
        total: int,
        issued: int,
        holders: list[str],
        gate_users: list[str] | None = None,
        cid: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """A coupon with these ISSUED rows, and a gate loaded with ``gate_users`` (None: not loaded)."""
        cid = cid or uuid.uuid4()
        await self.conn.execute(
            "INSERT INTO coupons (id, name, discount_type, discount_value, total_quantity,"
            " issued_quantity, min_order_amount, expires_at) VALUES"
            " ($1, 'c', 'FIXED', 1, $2, $3, 0, $4)",
            cid,
            total,
            issued,
            NOW + timedelta(hours=1),
        )
        await self.conn.executemany(
            "INSERT INTO issue_requests (request_id, coupon_id, user_id, status, requested_at)"
            " VALUES ($1, $2, $3, 'ISSUED', $4)",
            [(uuid.uuid4(), cid, u, NOW) for u in holders],
        )
        if gate_users is not None:
            gate_holders = [(u, uuid.uuid4()) for u in gate_users]
            await self.gate.load(cid, total, NOW + timedelta(hours=1), gate_holders)
        return cid


def found(report: dict[str, Any]) -> set[tuple[str | None, str]]:
    return {(v["coupon_id"], v["check"]) for v in report["violations"]}


async def test_every_broken_invariant_is_reported_and_a_healthy_coupon_is_not(
    broken: tuple[Settings, asyncpg.Connection],
) -> None:
    settings, conn = broken
    client = aioredis.from_url(settings.redis_url)
    world = World(settings, conn, RedisGate(client, settings.redis_prefix))
    healthy = await world.coupon(5, 2, ["a", "b"], ["a", "b", "rejected"])
    await conn.execute(
        "INSERT INTO issue_requests (request_id, coupon_id, user_id, status, reason, requested_at)"
        " VALUES ($1, $2, 'rejected', 'REJECTED', 'SOLD_OUT', $3)",
        uuid.uuid4(),
        healthy,
        NOW,
    )
    cold = await world.coupon(5, 1, ["a"], None)  # gate not loaded: nothing to compare
    over = await world.coupon(1, 2, ["a", "b"], ["a", "b"])
    miscount = await world.coupon(5, 3, ["a", "b"], ["a", "b"])
    doubled = await world.coupon(5, 2, ["a", "a"], ["a"])
    forgotten = await world.coupon(5, 2, ["a", "b"], ["a"])  # a holder the gate lost
    wrong_total = await world.coupon(5, 1, ["a"], ["a"])
    await client.hset(world.gate.keys(wrong_total)[0], "total", 7)
    in_flight = await world.coupon(5, 0, [], ["queued"])
    lost_id = next(
        c
        for c in iter(uuid.uuid4, None)
        if partition_of(str(c), settings.partitions)
        != partition_of(str(in_flight), settings.partitions)
    )  # on a partition without lag
    lost = await world.coupon(5, 0, [], ["ghost"], cid=lost_id)  # no row, no message, no DLQ
    dead = await world.coupon(5, 0, [], ["poisoned"])

    producer = make_producer(settings.kafka_bootstrap, linger_ms=0, timeout_ms=10_000)
    await producer.start()
    queued = IssueRequest(in_flight, "queued", uuid.uuid4(), NOW)
    await (await producer.send(settings.topic, encode(queued), key=queued.key()))
    poisoned = IssueRequest(dead, "poisoned", uuid.uuid4(), NOW)
    letter = DeadLetter(encode(poisoned), poisoned.key(), "test", 3, settings.topic, 0, 0, NOW)
    await (await producer.send(settings.dlq_topic, encode_dead_letter(letter), key=poisoned.key()))
    await producer.stop()

    report = (await verify(settings, None)).to_dict()
    await client.aclose()
    expected = {
        (str(over), "over_issue"),
        (str(miscount), "count_mismatch"),
        (str(doubled), "double_issue"),
        (str(doubled), "gate_too_small"),
        (str(forgotten), "gate_missing_holder"),
        (str(forgotten), "gate_too_small"),
        (str(wrong_total), "gate_total_mismatch"),
        (str(lost), "stranded_reservation"),
    }
    assert found(report) == expected
    by_id = {c["coupon_id"]: c for c in report["coupons"]}
    assert by_id[str(in_flight)]["in_flight"] == 1 and by_id[str(in_flight)]["partition_lag"] >= 1
    assert by_id[str(dead)]["dead_lettered"] == 1 and by_id[str(dead)]["stranded"] == 0
    assert by_id[str(healthy)]["rejected"] == {"SOLD_OUT": 1}
    assert by_id[str(cold)]["gate_loaded"] is False

    one = (await verify(settings, healthy)).to_dict()
    assert one["ok"] and [c["coupon_id"] for c in one["coupons"]] == [str(healthy)]


async def test_unreachable_redis_is_a_violation_not_a_pass(kafka_bootstrap: str) -> None:
    settings = isolated_settings(kafka_bootstrap, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    await asyncio.to_thread(prepare, settings)
    report = await verify(settings, None)
    assert report.ok  # no coupon: nothing to read from Redis
    conn = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": settings.db_schema}
    )
    await conn.execute(
        "INSERT INTO coupons (id, name, discount_type, discount_value, total_quantity,"
        " min_order_amount, expires_at) VALUES ($1, 'c', 'FIXED', 1, 5, 0, $2)",
        uuid.uuid4(),
        NOW + timedelta(hours=1),
    )
    report = await verify(settings, None)
    await conn.execute(f'DROP SCHEMA "{settings.db_schema}" CASCADE')
    await conn.close()
    assert [v.check for v in report.violations] == ["unverifiable"]


async def test_cli_exit_codes(broken: tuple[Settings, asyncpg.Connection]) -> None:
    settings, conn = broken
    world = World(settings, conn, RedisGate(aioredis.from_url(settings.redis_url), "unused"))
    good = await world.coupon(5, 0, [])
    code, out, _ = await cli(settings, "verify", "--json")
    assert code == 0 and json.loads(out)["ok"]
    bad = await world.coupon(5, 1, [])
    code, out, _ = await cli(settings, "verify")
    assert code == 1 and f"VIOLATION count_mismatch [{bad}]" in out, out
    code, out, _ = await cli(settings, "verify", "--coupon", str(good), "--json")
    assert code == 0 and [c["coupon_id"] for c in json.loads(out)["coupons"]] == [str(good)]
    assert (await cli(settings, "verify", "--coupon", "not-a-uuid"))[0] == 2
    assert (await cli(settings, "verify", "--coupon", str(uuid.uuid4())))[0] == 2
