"""On a real three-master Redis Cluster: where a coupon's keys live, the outcome feed across
nodes, and the API client's queue for connections (on one Redis and on the cluster alike)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from app.adapters import redis_client
from app.adapters.outcome_feed import OutcomeFeed
from app.adapters.redis_gate import GateAnswer, RedisGate
from app.api.errors import unavailable
from app.config import Settings
from app.consumer.faults import is_infrastructure
from app.domain.outcomes import GateOutcome, IssueStatus
from app.domain.status import RecordedOutcome
from harness import wait_until
from harness.redis_cluster import LoopbackRedisCluster
from tests.servers import redis_url
from tests.stack import Stack

COUPONS = 30  # every master gets one unless 30 random ids miss it (odds 3 * (2/3)**30 ~ 2e-5)


async def _keys_by_node(cluster: LoopbackRedisCluster, prefix: str) -> dict[int, list[str]]:
    """Every key under ``prefix`` as each master itself lists it (SCAN on that node alone)."""
    found: dict[int, list[str]] = {}
    for port in cluster.ports:
        async with aioredis.Redis(host="127.0.0.1", port=port) as node:
            found[port] = [k.decode() async for k in node.scan_iter(match=f"{prefix}:*")]
    return found


async def test_a_coupons_keys_share_one_slot_and_coupons_spread_over_every_master(
    cluster_stack: Stack, redis_cluster: LoopbackRedisCluster
) -> None:
    stack = cluster_stack
    coupons = [await stack.create_coupon(5) for _ in range(COUPONS)]
    answers = await asyncio.gather(*(stack.request_issue(c, "slot-user") for c in coupons))
    assert {a.status_code for a in answers} == {202}
    for coupon in coupons:
        await stack.wait_processed(coupon, 1)

    async def outcomes_written() -> dict[int, list[str]]:
        found = await _keys_by_node(redis_cluster, stack.settings.redis_prefix)
        written = sum(k.endswith(":outcomes") for keys in found.values() for k in keys)
        return found if written >= COUPONS else {}

    by_node = await wait_until(outcomes_written, 30, "every coupon's outcome in Redis")
    nodes_of: dict[str, set[int]] = defaultdict(set)
    slots_of: dict[str, set[int]] = defaultdict(set)
    kinds_of: dict[str, set[str]] = defaultdict(set)
    for port, keys in by_node.items():
        for key in keys:
            tag = re.search(r"\{([^}]*)\}", key)
            assert tag, f"{key} has no hash tag"
            nodes_of[tag[1]].add(port)
            slots_of[tag[1]].add(int(redis_cluster.ask(port, "CLUSTER KEYSLOT", key)))
            kinds_of[tag[1]].add(key.removeprefix(f"{stack.settings.redis_prefix}:{{{tag[1]}}}:"))
    for coupon in coupons:
        assert len(nodes_of[coupon]) == 1 and len(slots_of[coupon]) == 1, coupon
        assert {"meta", "holders", "processed", "outcomes"} <= kinds_of[coupon], kinds_of[coupon]
    assert len(nodes_of["registry"]) == 1 and len(slots_of["registry"]) == 1
    masters = {next(iter(nodes_of[c])) for c in coupons}
    assert masters == set(redis_cluster.ports), "a master holds none of the coupons"


async def test_one_subscription_hears_the_outcomes_of_coupons_on_every_master(
    redis_cluster: LoopbackRedisCluster,
) -> None:
    settings = Settings(redis_url=redis_cluster.url, redis_cluster=True)
    prefix = f"t:{uuid.uuid4().hex[:10]}"
    publisher, listener = redis_client.connect(settings), redis_client.connect(settings)
    gate = RedisGate(publisher, prefix)
    # Coupons whose announcements are published on each master in turn (a channel's own slot
    # decides where PUBLISH goes); the feed listens on one of them.
    coupons: dict[int, uuid.UUID] = {}
    while len(coupons) < len(redis_cluster.ports):
        coupon = uuid.uuid4()
        coupons.setdefault(redis_cluster.owner(gate.outcomes_channel(coupon)), coupon)
    feed = OutcomeFeed(listener, gate.outcomes_pattern(), gate.outcomes_channel(""))
    now = datetime.now(UTC)
    outcomes = [
        (c, "u", RecordedOutcome(uuid.uuid4(), IssueStatus.ISSUED, None, now))
        for c in coupons.values()
    ]
    feed.start()
    try:
        with contextlib.ExitStack() as waiting:
            events = [waiting.enter_context(feed.waiter(c, "u")) for c in coupons.values()]

            async def every_waiter_woken() -> bool:
                # Announce again until heard: the subscription starts in the background.
                await gate.record_outcomes(outcomes)
                return all(e.is_set() for e in events)

            await wait_until(every_waiter_woken, 15, "announcements from every master")
    finally:
        await feed.stop()
        await publisher.delete(*(gate.outcomes_key(c) for c in coupons.values()))
        await publisher.aclose()
        await listener.aclose()


@pytest_asyncio.fixture
async def own_cluster(tmp_path: Path) -> AsyncIterator[LoopbackRedisCluster]:
    """A cluster of the test's own, which it may break."""
    nodes = LoopbackRedisCluster(tmp_path / "own-cluster")
    try:
        yield await nodes.start()
    finally:
        nodes.stop()


async def test_the_feed_moves_to_another_node_when_its_node_dies(
    own_cluster: LoopbackRedisCluster,
) -> None:
    nodes = own_cluster
    client = redis_client.connect(Settings(redis_url=nodes.url, redis_cluster=True))
    gate = RedisGate(client, "t:feed")
    feed = OutcomeFeed(client, gate.outcomes_pattern(), gate.outcomes_channel(""))
    feed.start()
    try:

        def subscribed_on() -> list[int]:
            return [p for p in nodes.live_ports() if nodes.ask(p, "PUBSUB NUMPAT") == 1]

        first = (await wait_until(subscribed_on, 10, "the feed's subscription"))[0]
        nodes.kill(first)
        second = (await wait_until(subscribed_on, 30, "the feed on another node"))[0]
        assert second != first
        coupon = uuid.uuid4()
        while nodes.owner(gate.outcomes_channel(coupon)) == first:  # published on a live node
            coupon = uuid.uuid4()
        with feed.waiter(coupon, "u") as woken:

            async def heard() -> bool:
                await client.publish(gate.outcomes_channel(coupon), "u")
                return woken.is_set()

            await wait_until(heard, 10, "an announcement after the move")
    finally:
        await feed.stop()
        await client.aclose()


async def test_a_cluster_missing_a_master_is_a_503_and_an_infrastructure_fault(
    own_cluster: LoopbackRedisCluster,
) -> None:
    nodes = own_cluster
    settings = Settings(redis_url=nodes.url, redis_cluster=True)
    client = redis_client.connect(settings)
    gate = RedisGate(client, "t:down")
    try:
        await gate.is_loaded(uuid.uuid4())  # the client knows every node now
        dead = nodes.ports[0]  # the seed of the URL
        nodes.kill(dead)
        # A client starting now finds no node to learn the cluster from: as one Redis down.
        late = redis_client.connect_api(settings)
        with pytest.raises(RedisConnectionError, match="cannot be connected") as refused:
            await RedisGate(late, "t:down").is_loaded(uuid.uuid4())
        await late.aclose()
        assert unavailable(refused.value).status_code == 503

        def declared_failed() -> bool:
            return all(nodes.state(p) == "fail" for p in nodes.live_ports())

        await wait_until(declared_failed, 30, "the others to declare the cluster failed")
        coupon = uuid.uuid4()
        while nodes.owner(f"{{{coupon}}}") == dead:  # a coupon on a master that still runs
            coupon = uuid.uuid4()
        # Redis's default (cluster-require-full-coverage yes): no coupon is served meanwhile.
        # redis-py raises CLUSTERDOWN, or the connection error of re-reading the slot map.
        with pytest.raises(redis_client.REDIS_UNAVAILABLE) as caught:
            await gate.is_loaded(coupon)
        answer = unavailable(caught.value)
        assert answer.status_code == 503 and b'"reason":"UNAVAILABLE"' in answer.body
        assert is_infrastructure(caught.value)  # a consumer waits it out, never dead-letters
    finally:
        await client.aclose()


# --- the API's client: a burst queues, a long wait is a 503, on both kinds of Redis ---------------


@pytest.fixture(params=["redis", "redis-cluster"])
def plain_settings(request: pytest.FixtureRequest, redis_cluster: LoopbackRedisCluster) -> Settings:
    """Settings on the machine's Redis, then on the cluster."""
    if request.param == "redis":
        return Settings(redis_url=redis_url())
    return Settings(redis_url=redis_cluster.url, redis_cluster=True)


def _api_settings(plain: Settings, client_name: str) -> Settings:
    """An API with 2 Redis connections and a 0.3 s wait for one, its connections named (so the
    test finds them on the server)."""
    return Settings(
        redis_url=f"{plain.redis_url}?client_name={client_name}",
        redis_cluster=plain.redis_cluster,
        redis_max_connections=2,
        redis_pool_timeout_s=0.3,
    )


async def test_a_burst_queues_for_the_api_clients_connections(plain_settings: Settings) -> None:
    client = redis_client.connect_api(_api_settings(plain_settings, "burst"))
    key = f"t:{uuid.uuid4().hex[:10]}:burst"
    try:
        counts = await asyncio.gather(*(client.incr(key) for _ in range(100)))
        assert sorted(counts) == list(range(1, 101))  # none refused for want of a connection
    finally:
        await client.delete(key)
        await client.aclose()


async def test_waiting_too_long_for_a_connection_answers_503_unavailable(
    plain_settings: Settings,
) -> None:
    name = f"pool-{uuid.uuid4().hex[:10]}"
    client = redis_client.connect_api(_api_settings(plain_settings, name))
    helper = redis_client.connect(plain_settings)
    keys = [f"t:{uuid.uuid4().hex[:10]}:wait{i}" for i in range(2)]
    # ensure_future: redis-py types blpop as an Awaitable (create_task takes only coroutines) of
    # a union of every client's reply shapes (Any: each of these answers (key, value))
    blocked: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(client.blpop([k], timeout=1.5)) for k in keys
    ]
    try:

        async def both_blocked() -> bool:
            return await _blocked_clients(helper, name) == len(keys)

        await wait_until(both_blocked, 5, "two BLPOPs holding both connections")
        with pytest.raises(RedisConnectionError, match="No connection available") as caught:
            await client.get(keys[0])
        answer = unavailable(caught.value)
        assert answer.status_code == 503 and b'"reason":"UNAVAILABLE"' in answer.body
        for key in keys:
            await helper.rpush(key, "go")
        assert [list(await task) for task in blocked] == [[k.encode(), b"go"] for k in keys]
        assert await client.get(keys[0]) is None  # a connection is free again
    finally:
        for task in blocked:
            task.cancel()
        await client.aclose()
        await helper.aclose()


async def _blocked_clients(helper: redis_client.RedisClient, name: str) -> int:
    """How many connections named ``name`` are blocked in a command, on any node."""
    if isinstance(helper, aioredis.Redis):
        listings = [await helper.client_list()]
    else:
        # asked of several nodes, redis-py answers per node, which its types do not say
        per_node = cast(
            dict[Any, list[dict[str, str]]],
            await helper.client_list(target_nodes=helper.PRIMARIES),
        )
        listings = list(per_node.values())
    return sum(
        1 for clients in listings for c in clients if c["name"] == name and "b" in c["flags"]
    )


async def test_one_ticks_presses_of_a_coupon_are_decided_in_order_as_one_by_one(
    plain_settings: Settings,
) -> None:
    """Many presses of one coupon reach the gate in one loop tick (one script run for them all,
    on one Redis and on the cluster alike): each gets the answer it would have got alone."""
    client = redis_client.connect_api(plain_settings)
    gate = RedisGate(client, f"t:{uuid.uuid4().hex[:10]}")
    coupon = uuid.uuid4()
    now = datetime.now(UTC)
    requests = {f"u{i}": uuid.uuid4() for i in range(12)}
    presses = [(f"u{i}", requests[f"u{i}"]) for i in range(12)]
    presses.insert(3, ("u1", requests["u1"]))  # a retry of u1's press: its reservation back
    presses.insert(5, ("u2", uuid.uuid4()))  # u2 again, a new request: a duplicate
    try:
        await gate.load(coupon, 10, now + timedelta(hours=1), holders=())
        answers = await asyncio.gather(*(gate.reserve(coupon, u, r, now) for u, r in presses))
        seen = [(a.outcome, a.queue_ahead) for a in answers]
        accepted = GateOutcome.ACCEPTED
        assert seen[:3] == [(accepted, 0), (accepted, 1), (accepted, 2)]
        assert seen[3] == (accepted, 2)  # u1's retry: the others' reservations, as when alone
        assert seen[4] == (accepted, 3) and seen[5] == (GateOutcome.DUPLICATE, 0)
        assert seen[6:12] == [(accepted, n) for n in range(4, 10)]
        assert seen[12:] == [(GateOutcome.SOLD_OUT, 0)] * 2  # u10 and u11: ten were reserved
        snapshot = await gate.snapshot(coupon)
        assert snapshot.holders == {f"u{i}": str(requests[f"u{i}"]) for i in range(10)}
    finally:
        await client.aclose()


async def test_a_press_that_fails_in_redis_fails_alone_among_its_ticks_presses(
    plain_settings: Settings,
) -> None:
    """A press whose own key is broken fails with Redis's error; the presses merged with it in
    the same script call are decided as if it were not there."""
    client = redis_client.connect_api(plain_settings)
    prefix = f"t:{uuid.uuid4().hex[:10]}"
    gate = RedisGate(client, prefix)
    coupon = uuid.uuid4()
    now = datetime.now(UTC)
    second = int(now.timestamp() * 1000) // 1000
    # "bad"'s press counter for this second is a hash: its INCR fails with WRONGTYPE
    await client.hset(f"{prefix}:{{{coupon}}}:rl:bad:{second}", "not", "a counter")
    try:
        await gate.load(coupon, 10, now + timedelta(hours=1), holders=())
        answers = await asyncio.gather(
            *(gate.reserve(coupon, u, uuid.uuid4(), now, 5) for u in ("u0", "bad", "u1")),
            return_exceptions=True,
        )
        assert isinstance(answers[1], ResponseError) and "WRONGTYPE" in str(answers[1])
        first, last = answers[0], answers[2]
        assert isinstance(first, GateAnswer) and isinstance(last, GateAnswer)
        assert (first.outcome, first.queue_ahead) == (GateOutcome.ACCEPTED, 0)
        assert (last.outcome, last.queue_ahead) == (GateOutcome.ACCEPTED, 1)
        assert set((await gate.snapshot(coupon)).holders) == {"u0", "u1"}
    finally:
        await client.aclose()
