"""Coalesce the gate's script calls of one event-loop tick into one Redis round trip.

Under a sale many presses reach the gate in the same loop iteration (the server read several
sockets at once). Each call through the client costs a pool checkout, a retry wrapper, a timeout
context, a send and a read; a pipeline of N calls pays those once.

The calls of one tick that share the script and its first keys (one coupon's) are also merged
into one script call, whose reply holds one answer per caller: Redis runs the script once
instead of once per press, and the client parses one reply (measured: half of Redis's time per
press and of the client's). The scripts are written for it (gate_reserve.lua, gate_view.lua).
Each caller still gets its own answer or its own exception, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from app.adapters.redis_client import RedisClient


class _Call:
    """One script call to send: the merged calls of one tick with one script and first keys."""

    __slots__ = ("args", "futures", "keys", "script")

    def __init__(self, script: AsyncScript, shared_keys: tuple[Any, ...]) -> None:
        self.script = script
        self.keys: list[Any] = [*shared_keys]
        self.args: list[Any] = []
        self.futures: list[asyncio.Future[Any]] = []

    def run_alone(self) -> Any:
        return self.script(keys=self.keys, args=self.args)

    def answer(self, result: Any) -> None:
        """Each caller its own answer: the reply holds one per caller, in order."""
        if not isinstance(result, list) or len(result) != len(self.futures):
            self.fail(RuntimeError(f"a merged script answered {len(self.futures)} callers wrongly"))
            return
        for future, one in zip(self.futures, result, strict=True):
            _set(future, result=one)

    def fail(self, exc: Exception) -> None:
        for future in self.futures:
            _set(future, exception=exc)


class ScriptBatcher:
    """``await batcher.call(script, shared_keys, keys, args)``: this caller's answer from a call
    of ``script``. Every call made before the loop's next iteration shares one pipeline
    (``max_batch`` callers at most), and those with the same script and ``shared_keys`` are one
    script call."""

    def __init__(self, client: RedisClient, max_batch: int = 256) -> None:
        self._client = client
        # redis-py refuses EVALSHA in a cluster pipeline: on a cluster every call goes alone
        self._direct = isinstance(client, RedisCluster)
        self._max_batch = max_batch
        self._pending: dict[tuple[str, tuple[Any, ...]], _Call] = {}  # in the order first called
        self._callers = 0
        self._flushing: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # the client's (its connections')

    def call(
        self,
        script: AsyncScript,
        shared_keys: tuple[Any, ...],
        keys: Sequence[Any],
        args: Sequence[Any],
    ) -> asyncio.Future[Any]:
        """The script is called with ``shared_keys`` first, then every merged caller's ``keys``,
        and every caller's ``args``, in order: it knows how many keys and arguments a caller has,
        and answers with a list of one answer per caller."""
        group = (script.sha, shared_keys)
        merged = self._pending.get(group)
        if merged is None:
            merged = self._pending[group] = _Call(script, shared_keys)
        merged.keys.extend(keys)
        merged.args.extend(args)
        loop = self._loop
        if loop is None:  # looked up once (Python 3.11's look-up makes a getpid() system call)
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        merged.futures.append(future)
        self._callers += 1
        if self._callers == 1:
            loop.call_soon(self._flush)  # after the callbacks already ready in this iteration
        elif self._callers >= self._max_batch:
            self._flush()
        return future

    def _flush(self) -> None:
        batch = list(self._pending.values())
        self._pending.clear()
        self._callers = 0
        if batch:
            assert self._loop is not None  # set by the call that queued the batch
            task = self._loop.create_task(self._run(batch))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _run(self, batch: list[_Call]) -> None:
        try:
            await self._execute(batch)
        except BaseException as exc:  # no caller may be left waiting, whatever went wrong
            for merged in batch:
                merged.fail(exc if isinstance(exc, Exception) else RuntimeError(exc))
            if not isinstance(exc, Exception):
                raise

    async def _execute(self, batch: list[_Call]) -> None:
        if len(batch) == 1:  # a lone call (one coupon's presses): through the client, no gather
            await _settle(batch[0], batch[0].run_alone())
            return
        if self._direct:  # a cluster's calls: each through the client (its own node)
            await asyncio.gather(*(_settle(merged, merged.run_alone()) for merged in batch))
            return
        pipe = self._client.pipeline(transaction=False)
        for merged in batch:
            pipe.evalsha(merged.script.sha, len(merged.keys), *merged.keys, *merged.args)
        results = await pipe.execute(raise_on_error=False)  # a failed round trip: see _run
        for merged, result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):  # Redis lost its script cache (a restart)
                await _settle(merged, merged.run_alone())  # loads it, then runs
            elif isinstance(result, Exception):
                merged.fail(result)
            else:
                merged.answer(result)


async def _settle(merged: _Call, work: Any) -> None:
    try:
        result = await work
    except Exception as exc:
        merged.fail(exc)
    else:
        merged.answer(result)


def _set(
    future: asyncio.Future[Any], *, result: Any = None, exception: Exception | None = None
) -> None:
    if future.done():  # the caller was cancelled (its client went away)
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
