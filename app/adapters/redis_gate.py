"""Redis gate: the fast, atomic admission check in front of Kafka. A cache; PostgreSQL is the truth."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from uuid import UUID

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from app.adapters import redis_client
from app.adapters.redis_batch import ScriptBatcher
from app.adapters.redis_client import RedisClient
from app.domain.outcomes import GateOutcome, IssueStatus
from app.domain.status import RecordedOutcome

_CODES = {
    0: GateOutcome.ACCEPTED,
    1: GateOutcome.DUPLICATE,
    2: GateOutcome.SOLD_OUT,
    3: GateOutcome.EXPIRED,
    5: GateOutcome.RATE_LIMITED,
}
_FAILED = -2  # gate_reserve.lua: the press's own error (the others of its call are decided)
_REBUILD_CHUNK = 5000
_BASES_REMEMBERED = 4096  # coupons whose key prefix is kept formatted (forgotten all at once)


@dataclass(frozen=True, slots=True)
class GateAnswer:
    """The gate's verdict; ``loaded`` is False when Redis has no entry for the coupon."""

    outcome: GateOutcome | None
    queue_ahead: int = 0
    partition: int | None = None  # the coupon's fixed partition (None: its gate has none)

    @property
    def loaded(self) -> bool:
        return self.outcome is not None


@dataclass(frozen=True, slots=True)
class GateSnapshot:
    """What the gate holds for one coupon (for invariant checks, not for the hot path)."""

    loaded: bool
    total: int | None
    holders: Mapping[str, str]  # user -> the request id holding it


class RedisGate:
    """Per coupon: a holders hash {user: request id}, decided by a Lua script (one run for the
    presses of one coupon in one loop tick)."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._reserve = client.register_script(_script("gate_reserve.lua"))
        self._release = client.register_script(_script("gate_release.lua"))
        self._unlock = client.register_script(_script("gate_unlock.lua"))
        self._outcomes = client.register_script(_script("gate_outcomes.lua"))
        self._view = client.register_script(_script("gate_view.lua"))
        self._settle_source = _script("gate_settle.lua")  # sent whole: see settle()
        self._batch = ScriptBatcher(client)  # presses and reads of one loop tick: one round trip
        # The registry of every coupon id, with a marker saying it was loaded whole: unknown ids
        # are refused from Redis alone. Its own hash tag: one slot, apart from the coupons'.
        self._registry = f"{prefix}:{{registry}}:ids"
        self._registry_loaded = f"{prefix}:{{registry}}:loaded"
        self._bases: dict[UUID, str] = {}

    def keys(self, coupon_id: UUID) -> tuple[str, str, str]:
        """The coupon's keys: meta, holders, processed counter.

        One hash tag per coupon keeps them on one Redis Cluster slot (the script needs that).
        """
        base = self._base(coupon_id)
        return f"{base}:meta", f"{base}:holders", f"{base}:processed"

    def outcomes_key(self, coupon_id: UUID) -> str:
        """The coupon's outcomes hash {user: outcome}: status reads never touch PostgreSQL."""
        return f"{self._base(coupon_id)}:outcomes"

    def outcomes_channel(self, coupon_id: UUID | str) -> str:
        """Where the consumer announces the users of a coupon that just got an outcome."""
        return f"{self._prefix}:outcomes:{coupon_id}"

    def outcomes_pattern(self) -> str:
        return f"{self._prefix}:outcomes:*"

    def _base(self, coupon_id: UUID) -> str:
        """Remembered per coupon: a sale presses a few coupons thousands of times a second, and
        formatting a UUID is Python code (twice per press)."""
        base = self._bases.get(coupon_id)
        if base is None:
            if len(self._bases) >= _BASES_REMEMBERED:
                self._bases.clear()
            base = self._bases[coupon_id] = f"{self._prefix}:{{{coupon_id}}}"
        return base

    async def reserve(
        self,
        coupon_id: UUID,
        user_id: str,
        request_id: UUID,
        now: datetime,
        presses_per_second: int = 0,
    ) -> GateAnswer:
        """Rate-limit, check and reserve in one atomic step (one round trip per press).

        A retry with the same request id is idempotent. ``presses_per_second`` limits one user's
        presses on this coupon (0: no limit).
        """
        coupon_keys, own_keys, args = self._reserve_call(
            coupon_id, user_id, request_id, now, presses_per_second
        )
        # The presses of one coupon in one loop tick: one run of the script (gate_reserve.lua).
        code, ahead, partition = await self._batch.call(self._reserve, coupon_keys, own_keys, args)
        if int(code) == _FAILED:  # this press alone failed in Redis, as it would have alone
            raise ResponseError(ahead.decode() if isinstance(ahead, bytes) else str(ahead))
        fixed = int(partition)
        return GateAnswer(_CODES.get(int(code)), int(ahead), None if fixed < 0 else fixed)

    async def queue_reserve(
        self, pipe: Pipeline, coupon_id: UUID, user_id: str, request_id: UUID, now: datetime
    ) -> None:
        """Add a reserve to ``pipe`` (for measuring Redis's own ceiling with the real script)."""
        coupon_keys, own_keys, args = self._reserve_call(coupon_id, user_id, request_id, now, 0)
        # one press: a list of one answer
        await self._reserve(keys=[*coupon_keys, *own_keys], args=args, client=pipe)

    def _reserve_call(
        self, coupon_id: UUID, user_id: str, request_id: UUID, now: datetime, limit: int
    ) -> tuple[tuple[str, str, str], list[str], list[str | int]]:
        """(the coupon's keys, the press's own key: its user's counter this second, its args)."""
        now_ms = _epoch_ms(now)
        rate_key = f"{self._base(coupon_id)}:rl:{user_id}:{now_ms // 1000}"
        return self.keys(coupon_id), [rate_key], [user_id, now_ms, str(request_id), limit]

    async def release(self, coupon_id: UUID, user_id: str, request_id: UUID) -> None:
        """Undo this request's reservation (its message never reached the broker)."""
        await self._release(keys=[self.keys(coupon_id)[1]], args=[user_id, str(request_id)])

    async def has_reserved(self, coupon_id: UUID, user_id: str) -> bool:
        return bool(await self._redis.hexists(self.keys(coupon_id)[1], user_id))

    async def holding_request(self, coupon_id: UUID, user_id: str) -> UUID | None:
        """The request id holding this user's reservation, if any."""
        held = await self._redis.hget(self.keys(coupon_id)[1], user_id)
        return None if held is None else UUID(_text(held))

    async def holder_requests(self, coupon_id: UUID) -> dict[str, str]:
        """Every holder and the request id holding it (HSCAN: never one blocking call)."""
        return {
            _text(user): _text(request)
            async for user, request in self._redis.hscan_iter(self.keys(coupon_id)[1], count=1000)
        }

    async def snapshot(self, coupon_id: UUID) -> GateSnapshot:
        """Meta and every holder."""
        total = await self._redis.hget(self.keys(coupon_id)[0], "total")
        holders = await self.holder_requests(coupon_id)
        return GateSnapshot(total is not None, None if total is None else int(total), holders)

    async def is_loaded(self, coupon_id: UUID) -> bool:
        return bool(await self._redis.exists(self.keys(coupon_id)[0]))

    async def load(
        self,
        coupon_id: UUID,
        total: int,
        expires_at: datetime,
        holders: Iterable[tuple[str, UUID]],
        outcomes: Iterable[tuple[str, RecordedOutcome]] = (),
        partition: int | None = None,
    ) -> None:
        """(Re)build a coupon's gate: holders and outcomes first, meta last, so a half-built gate
        stays closed (and its outcomes are complete whenever its meta exists).

        Only adds: a concurrent rebuild, a reservation taken or an outcome written meanwhile is
        never undone.
        """
        meta, users, processed = self.keys(coupon_id)
        pairs = {user: str(request_id) for user, request_id in holders}
        items = list(pairs.items())
        for start in range(0, len(items), _REBUILD_CHUNK):
            await self._redis.hset(users, mapping=dict(items[start : start + _REBUILD_CHUNK]))
        entries = [(user, encode_outcome(outcome)) for user, outcome in outcomes]
        key = self.outcomes_key(coupon_id)
        for start in range(0, len(entries), _REBUILD_CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for user, entry in entries[start : start + _REBUILD_CHUNK]:
                    pipe.hsetnx(key, user, entry)
                await pipe.execute()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(processed, len(pairs), nx=True)
            if partition is not None:  # in the same MULTI: never a gate open without it
                pipe.hset(meta, "partition", partition)
            pipe.hset(meta, mapping={"total": total, "expires_ms": _epoch_ms(expires_at)})
            await pipe.execute()

    # --- the coupon registry ---------------------------------------------------------------------

    async def is_registered(self, coupon_id: UUID) -> bool | None:
        """Whether the coupon exists, from Redis alone; None when the registry is not loaded."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(self._registry_loaded)
            pipe.sismember(self._registry, str(coupon_id))
            loaded, member = await pipe.execute()
        return bool(member) if loaded else None

    async def register(self, coupon_ids: Iterable[UUID], *, complete: bool = False) -> None:
        """Add coupon ids; ``complete`` marks the registry as holding every coupon that exists.

        Only adds, so a load racing with a coupon being created can never drop that coupon.
        """
        ids = [str(c) for c in coupon_ids]
        for start in range(0, len(ids), _REBUILD_CHUNK):
            await self._redis.sadd(self._registry, *ids[start : start + _REBUILD_CHUNK])
        if complete:
            await self._redis.set(self._registry_loaded, 1)

    # --- one rebuild at a time, across processes ------------------------------------------------

    async def lock_rebuild(self, coupon_id: UUID, token: str, ttl_ms: int) -> bool:
        """Take the coupon's short rebuild lock (expires by itself if its holder dies)."""
        return bool(await self._redis.set(self._lock_key(coupon_id), token, nx=True, px=ttl_ms))

    async def unlock_rebuild(self, coupon_id: UUID, token: str) -> None:
        await self._unlock(keys=[self._lock_key(coupon_id)], args=[token])

    def _lock_key(self, coupon_id: UUID) -> str:
        return f"{self._base(coupon_id)}:rebuilding"

    async def record_processed(
        self,
        processed_per_coupon: Mapping[UUID, int],
        issued: Iterable[tuple[UUID, str, UUID]],
    ) -> None:
        """After a DB commit: advance the counters ``queueSize`` comes from, and make sure every
        new holder is in the gate (after Redis lost it, a rebuild only knew the DB's holders)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for coupon_id, n in processed_per_coupon.items():
                pipe.incrby(self.keys(coupon_id)[2], n)
            for coupon_id, user_id, request_id in issued:
                pipe.hsetnx(self.keys(coupon_id)[1], user_id, str(request_id))
            await pipe.execute()

    async def record_outcomes(
        self, outcomes: Iterable[tuple[UUID, str, RecordedOutcome]], announce: bool = True
    ) -> None:
        """After the database recorded them: the outcomes status reads answer from, then one
        message per coupon naming its users, for the long-polls waiting on them.

        Every outcome is written before the first announcement: on a cluster a channel lives on
        another node than its coupon, and that node being away must not keep outcomes out.
        """
        by_coupon: dict[UUID, list[str]] = {}
        for coupon_id, user_id, outcome in outcomes:
            by_coupon.setdefault(coupon_id, []).extend((user_id, encode_outcome(outcome)))
        for coupon_id, args in by_coupon.items():
            await self._outcomes(keys=[self.outcomes_key(coupon_id)], args=args)
        for coupon_id, args in by_coupon.items() if announce else ():
            await self._redis.publish(self.outcomes_channel(coupon_id), "\n".join(args[::2]))

    async def record_batch(
        self,
        processed_per_coupon: Mapping[UUID, int],
        issued: Sequence[tuple[UUID, str, UUID]],
        outcomes: Sequence[tuple[UUID, str, RecordedOutcome]],
    ) -> None:
        """After a batch's DB commit: :meth:`record_processed` then :meth:`record_outcomes`, in
        one round trip on one Redis (a pipeline runs its commands in order, so every outcome is
        written before the first announcement). On a Redis Cluster, the two calls as they are."""
        if isinstance(self._redis, RedisCluster):
            await self.record_processed(processed_per_coupon, issued)
            await self.record_outcomes(outcomes)
            return
        by_coupon: dict[UUID, list[str]] = {}
        for coupon_id, user_id, outcome in outcomes:
            by_coupon.setdefault(coupon_id, []).extend((user_id, encode_outcome(outcome)))
        # EVALSHA, not the registered script: in a pipeline redis-py would first ask SCRIPT
        # EXISTS, a second round trip per batch.
        async with self._redis.pipeline(transaction=False) as pipe:
            for coupon_id, n in processed_per_coupon.items():
                pipe.incrby(self.keys(coupon_id)[2], n)
            for coupon_id, user_id, request_id in issued:
                pipe.hsetnx(self.keys(coupon_id)[1], user_id, str(request_id))
            for coupon_id, args in by_coupon.items():
                pipe.evalsha(self._outcomes.sha, 1, self.outcomes_key(coupon_id), *args)
            for coupon_id, args in by_coupon.items():
                pipe.publish(self.outcomes_channel(coupon_id), "\n".join(args[::2]))
            results = await pipe.execute(raise_on_error=False)
        first_outcome = len(processed_per_coupon) + len(issued)
        scripts = results[first_outcome : first_outcome + len(by_coupon)]
        for (coupon_id, args), result in zip(by_coupon.items(), scripts, strict=True):
            if isinstance(result, NoScriptError):  # Redis lost its script cache (a restart)
                await self._outcomes(keys=[self.outcomes_key(coupon_id)], args=args)  # loads it
                await self._redis.publish(self.outcomes_channel(coupon_id), "\n".join(args[::2]))
        failed = [
            r for r in results if isinstance(r, Exception) and not isinstance(r, NoScriptError)
        ]
        if failed:
            raise failed[0]

    async def settle(self, settlements: Sequence[tuple[UUID, str, RecordedOutcome]]) -> list[bool]:
        """The reconciler's Redis half of settling a chunk, after PostgreSQL recorded the
        failures: each reservation's outcome is written and the reservation given back, in one
        script call per coupon (atomic per coupon), then each coupon's users are announced.

        One round trip for the whole chunk on one Redis. On a Redis Cluster the calls are sent
        per node at once (one pipeline; EVAL, as a cluster pipeline refuses EVALSHA), then the
        announcements, which a cluster pipeline refuses, side by side. Returns, per settlement in
        order, whether its reservation was given back here (False: no longer held by it).
        """
        by_coupon: dict[UUID, list[int]] = {}
        for index, (coupon_id, _, _) in enumerate(settlements):
            by_coupon.setdefault(coupon_id, []).append(index)
        if not by_coupon:
            return []
        cluster = isinstance(self._redis, RedisCluster)
        pipe = self._redis.pipeline(transaction=False)
        for coupon_id, indexes in by_coupon.items():
            args: list[str] = []
            for i in indexes:
                _, user_id, outcome = settlements[i]
                args.extend((user_id, str(outcome.request_id), encode_outcome(outcome)))
            keys = (self.keys(coupon_id)[1], self.outcomes_key(coupon_id))
            pipe.eval(self._settle_source, 2, *keys, *args)
        announcements = [
            (self.outcomes_channel(c), "\n".join(settlements[i][1] for i in indexes))
            for c, indexes in by_coupon.items()
        ]
        if not cluster:
            for channel, users in announcements:
                pipe.publish(channel, users)
        results = await pipe.execute()
        if cluster:
            await asyncio.gather(*(self._redis.publish(c, u) for c, u in announcements))
        released = [False] * len(settlements)
        for indexes, flags in zip(by_coupon.values(), results, strict=False):
            for i, flag in zip(indexes, flags, strict=True):
                released[i] = bool(flag)
        return released

    async def user_view(
        self, coupon_id: UUID, user_id: str
    ) -> tuple[bool, UUID | None, RecordedOutcome | None]:
        """(gate loaded, the request holding the user's reservation, the user's last outcome)."""
        meta, holders, _ = self.keys(coupon_id)
        keys = (meta, holders, self.outcomes_key(coupon_id))
        # The reads of one coupon in one loop tick: one run of the script (gate_view.lua).
        loaded, held, entry = await self._batch.call(self._view, keys, (), [user_id])
        return (
            bool(loaded),
            None if held is None else UUID(_text(held)),
            None if entry is None else decode_outcome(_text(entry)),
        )

    async def missing_outcomes(self, coupon_id: UUID, user_ids: Sequence[str]) -> list[str]:
        """Which of these users have no outcome recorded in Redis."""
        if not user_ids:
            return []
        found = await self._redis.hmget(self.outcomes_key(coupon_id), list(user_ids))
        return [user for user, entry in zip(user_ids, found, strict=True) if entry is None]

    async def ping(self) -> bool:
        return await redis_client.ping(self._redis)


def _script(name: str) -> str:
    return (resources.files("app.adapters") / name).read_text()


def encode_outcome(outcome: RecordedOutcome) -> str:
    at_ms = _epoch_ms(outcome.at)
    return f"{outcome.status.value}|{outcome.reason or ''}|{at_ms}|{outcome.request_id}"


def decode_outcome(entry: str) -> RecordedOutcome:
    status, reason, at_ms, request_id = entry.split("|")
    return RecordedOutcome(
        UUID(request_id),
        IssueStatus(status),
        reason or None,
        datetime.fromtimestamp(int(at_ms) / 1000, UTC),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
