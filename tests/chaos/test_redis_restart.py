"""Redis dies and comes back empty mid-sale: clean 503s meanwhile, the gate is rebuilt, no over-issue.

The session's Redis is shared with other tests, so this scenario starts its own redis-server, or
its own three-master Redis Cluster, of which it kills the master serving the sale's coupon.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
import pytest_asyncio

from app.local.servers import RedisServer
from app.verify import verify
from harness import wait_until
from harness.redis_cluster import LoopbackRedisCluster
from tests.chaos.harness import (
    Sale,
    record,
    run_verify,
    users,
    wait_blocked,
)
from tests.stack import Stack, holding_coupon_rows, isolated_settings

pytestmark = pytest.mark.slow


class OwnRedis(Protocol):
    """A throw-away Redis of this scenario (no persistence: a restart is also a flush)."""

    cluster: bool

    @property
    def url(self) -> str:
        """The URL the stack connects to (read-only: each kind derives it)."""

    def kill(self, coupon: str) -> None:
        """SIGKILL the server holding ``coupon``'s gate."""

    async def restart(self) -> None:
        """Start it again, empty, and wait until it serves."""

    def stop(self) -> None: ...


@dataclass
class OwnServer:
    """One redis-server."""

    server: RedisServer
    cluster: bool = False

    @property
    def url(self) -> str:
        return self.server.url

    def kill(self, coupon: str) -> None:
        self.server.kill()

    async def restart(self) -> None:
        self.server.restart()  # in this thread: the server dies with the thread that started it

    def stop(self) -> None:
        self.server.remove()


@dataclass
class OwnCluster:
    """Three masters; the one serving the coupon's hash tag dies (its slots with it)."""

    nodes: LoopbackRedisCluster
    killed: int | None = None
    cluster: bool = True

    @property
    def url(self) -> str:
        return self.nodes.url

    def kill(self, coupon: str) -> None:
        self.killed = self.nodes.owner(f"{{{coupon}}}")
        self.nodes.kill(self.killed)

    async def restart(self) -> None:
        assert self.killed is not None
        await self.nodes.restart(self.killed)  # rejoins with its slots, empty

    def stop(self) -> None:
        self.nodes.stop()


@pytest_asyncio.fixture(loop_scope="session", params=["redis-server", "redis-cluster"])
async def redis_stack(
    request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[tuple[Stack, OwnRedis]]:
    redis: OwnRedis
    if request.param == "redis-server":
        redis = OwnServer(RedisServer(directory=tmp_path).start())
    else:
        redis = OwnCluster(await LoopbackRedisCluster(tmp_path / "redis-cluster").start())
    settings = isolated_settings(kafka_bootstrap, redis_url=redis.url, redis_cluster=redis.cluster)
    stack = await Stack(settings, tmp_path).start(consumers=2)
    yield stack, redis
    await stack.stop()
    redis.stop()


async def _readyz(stack: Stack) -> int:
    assert stack.http is not None
    return (await stack.http.get("/readyz")).status_code


async def _until_ready(stack: Stack) -> None:
    async def ready() -> bool:
        return await _readyz(stack) == 200

    await wait_until(ready, 30, "the API to be ready again")


async def _while_away(stack: Stack, sale: Sale, prefix: str) -> int:
    """Presses while Redis is down: every one a clean 503 naming the gate; /readyz says 503."""
    got = await sale.wave(stack, users(prefix, 20))
    assert set(got) == {503}, got
    assert stack.http is not None
    answer = await stack.request_issue(sale.coupons[0], f"{prefix}-probe")
    assert answer.status_code == 503 and answer.json()["success"] is False, answer.text
    assert await _readyz(stack) == 503
    return got[503] + 1


async def test_redis_lost_mid_sale_answers_503_rebuilds_the_gate_and_never_over_issues(
    redis_stack: tuple[Stack, OwnRedis], capsys: pytest.CaptureFixture[str]
) -> None:
    stack, redis = redis_stack
    started, stock = time.monotonic(), 200
    sale = Sale([await stack.create_coupon(stock)])
    coupon = sale.coupons[0]
    unavailable = 0

    # 1. Redis dies while 120 accepted requests are still in flight (the coupon row is held).
    async with holding_coupon_rows(stack, sale.coupons):
        assert (await sale.wave(stack, users("before", 120))) == {202: 120}
        await wait_blocked(stack, every=False)
        redis.kill(coupon)
        unavailable += await _while_away(stack, sale, "away1")
        await redis.restart()  # empty: the gate's users set and counters are gone
        await _until_ready(stack)
        # Rebuilt from PostgreSQL, which has no holder yet: the gate re-admits in-flight users
        # and admits up to the stock again. PostgreSQL must refuse all of the excess.
        before = await stack.api_metrics()
        await sale.wave(stack, users("before", 60) + users("after", 140))
        after = await stack.api_metrics()
    # 200 concurrent presses on a cold gate: one rebuild (and one registry load), not 200.
    rebuilds = after["coupon_gate_rebuilds_total"] - before["coupon_gate_rebuilds_total"]
    assert rebuilds == len(sale.coupons)
    gate_reads = 'coupon_gate_db_reads_total{purpose="gate"}'
    assert after[gate_reads] - before[gate_reads] == len(sale.coupons)
    await sale.drain(stack)
    outcomes = await stack.outcomes(coupon)
    assert outcomes["ISSUED"] == stock  # never more, whatever the gate admitted
    assert sale.accepted > stock
    # The consumer records every holder it issues in the gate, so the gate rebuilt mid-flight
    # knows them all once they are processed.
    first = await verify(stack.settings, None)
    assert first.violations == []

    # 2. Redis dies again once everything is processed: the rebuild is now exact.
    redis.kill(coupon)
    unavailable += await _while_away(stack, sale, "away2")
    await redis.restart()
    await _until_ready(stack)
    # Dead pooled connections are replaced and the call retried (the gate script is idempotent
    # per request id): no 503 once Redis is back.
    late = await sale.wave(stack, users("before", 10) + users("late", 10))
    assert late == {409: 10, 410: 10}, late  # holders are known again; stock is gone
    report = await run_verify(stack.settings)
    assert [c["stranded"] for c in report["coupons"]] == [0]
    record(
        capsys,
        "redis-cluster-restart" if redis.cluster else "redis-restart",
        sale,
        report,
        started,
        answered_503=unavailable,
        gate_rebuilds=int(rebuilds),
        over_admitted_by_gate=sale.accepted - stock,
    )
