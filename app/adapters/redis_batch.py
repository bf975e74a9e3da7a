"""Coalesce the gate's script calls of one event-loop tick into one Redis round trip.

Under a sale many presses reach the gate in the same loop iteration (the server read several
sockets at once). Each call through the client costs a pool checkout, a retry wrapper, a timeout
context, a send and a read; a pipeline of N calls pays those once. Each caller still gets its own
answer or its own exception, in order; a lone call goes through the client unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from app.adapters.redis_client import RedisClient

_Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], asyncio.Future[Any]]


class ScriptBatcher:
    """``await batcher.call(script, keys, args)``: like ``script(keys=..., args=...)``, but every
    call made before the loop's next iteration shares one pipeline (``max_batch`` at most)."""

    def __init__(self, client: RedisClient, max_batch: int = 256) -> None:
        self._client = client
        # redis-py refuses EVALSHA in a cluster pipeline: on a cluster every call goes alone
        self._direct = isinstance(client, RedisCluster)
        self._max_batch = max_batch
        self._pending: list[_Call] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # the client's (its connections')

    def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        if self._direct:
            return script(keys=keys, args=args)
        loop = self._loop
        if loop is None:  # looked up once (Python 3.11's look-up makes a getpid() system call)
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)  # after the callbacks already ready in this iteration
        self._pending.append((script, keys, args, future))
        if len(self._pending) >= self._max_batch:
            self._flush()
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            assert self._loop is not None  # set by the call() that queued the batch
            task = self._loop.create_task(self._run(batch))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _run(self, batch: list[_Call]) -> None:
        try:
            await self._execute(batch)
        except BaseException as exc:  # no caller may be left waiting, whatever went wrong
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
            if not isinstance(exc, Exception):
                raise

    async def _execute(self, batch: list[_Call]) -> None:
        if len(batch) == 1:
            script, keys, args, future = batch[0]
            await _settle(future, script(keys=keys, args=args))
            return
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False)  # a failed round trip: see _run
        for (script, keys, args, future), result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):  # Redis lost its script cache (a restart)
                await _settle(future, script(keys=keys, args=args))  # loads it, then runs
            elif isinstance(result, Exception):
                _set(future, exception=result)
            else:
                _set(future, result=result)


async def _settle(future: asyncio.Future[Any], work: Any) -> None:
    try:
        result = await work
    except Exception as exc:
        _set(future, exception=exc)
    else:
        _set(future, result=result)


def _set(
    future: asyncio.Future[Any], *, result: Any = None, exception: Exception | None = None
) -> None:
    if future.done():  # the caller was cancelled (its client went away)
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
