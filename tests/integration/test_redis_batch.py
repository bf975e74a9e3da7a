"""The gate's script calls of one loop tick share one pipeline, and those of one script and one
coupon's keys are one script run: against the real Redis, each caller still gets its own answer
or its own error, and a flushed script cache is survived."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from app.adapters.redis_batch import ScriptBatcher
from tests.servers import redis_url

# Count the runs of a group in its KEYS[1], and answer each caller's argument back; fail the
# whole run if one of them is "boom".
_ECHO = """
redis.call('INCR', KEYS[1])
local answers = {}
for i = 1, #ARGV do
  if ARGV[i] == 'boom' then return redis.error_reply('boom') end
  answers[i] = ARGV[i]
end
return answers
"""


@pytest_asyncio.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(redis_url())
    yield c
    await c.aclose()


@pytest_asyncio.fixture
async def echo(client: aioredis.Redis) -> tuple[AsyncScript, ScriptBatcher]:
    """The script above, and a batcher on ``client``."""
    return client.register_script(_ECHO), ScriptBatcher(client)


def _groups(*names: str) -> list[str]:
    return [f"t:{uuid.uuid4().hex[:10]}:{name}" for name in names]


async def test_one_tick_is_one_pipeline_and_one_run_per_group_with_an_answer_each(
    client: aioredis.Redis, echo: tuple[AsyncScript, ScriptBatcher]
) -> None:
    script, batcher = echo
    groups = _groups("a", "b")
    await script(keys=["warm"], args=["warm"])  # loaded once
    sent: list[int] = []
    original = client.pipeline

    def counting_pipeline(transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        sent.append(1)
        return original(transaction, shard_hint)

    client.pipeline = counting_pipeline  # type: ignore[method-assign]
    answers = await asyncio.gather(
        *(batcher.call(script, (groups[i % 2],), (), [f"v{i}"]) for i in range(50))
    )
    assert answers == [f"v{i}".encode() for i in range(50)]
    assert len(sent) == 1  # fifty callers, one round trip
    assert [int(await client.get(g) or 0) for g in groups] == [1, 1]  # one run per group
    await client.delete(*groups, "warm")


async def test_an_error_reaches_only_the_callers_of_its_run(
    client: aioredis.Redis, echo: tuple[AsyncScript, ScriptBatcher]
) -> None:
    script, batcher = echo
    failing, fine = _groups("failing", "fine")
    answers = await asyncio.gather(
        batcher.call(script, (failing,), (), ["a"]),
        batcher.call(script, (fine,), (), ["b"]),
        batcher.call(script, (failing,), (), ["boom"]),
        return_exceptions=True,
    )
    assert isinstance(answers[0], ResponseError) and isinstance(answers[2], ResponseError)
    assert "boom" in str(answers[2])
    assert answers[1] == b"b"
    await client.delete(failing, fine)


async def test_a_flushed_script_cache_is_reloaded(
    client: aioredis.Redis, echo: tuple[AsyncScript, ScriptBatcher]
) -> None:
    script, batcher = echo
    first, second = _groups("first", "second")
    await script(keys=[first], args=["warm"])
    await client.script_flush()  # as after a Redis restart
    answers = await asyncio.gather(  # two runs in the pipeline: both answered NOSCRIPT
        *(batcher.call(script, ((first, second)[i % 2],), (), [str(i)]) for i in range(6))
    )
    assert answers == [str(i).encode() for i in range(6)]
    assert (await client.script_exists(script.sha)) == [True]
    await client.delete(first, second)


async def test_a_lost_connection_reaches_every_caller_of_the_batch() -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    try:
        script = dead.register_script(_ECHO)
        batcher = ScriptBatcher(dead)
        answers = await asyncio.gather(
            *(batcher.call(script, (f"k{i % 2}",), (), [str(i)]) for i in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(a, ConnectionError | aioredis.ConnectionError) for a in answers)
    finally:
        await dead.aclose()


async def test_a_batch_that_cannot_be_built_fails_every_caller_instead_of_hanging(
    client: aioredis.Redis, echo: tuple[AsyncScript, ScriptBatcher]
) -> None:
    script, batcher = echo

    def refusing_pipeline(transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        raise RuntimeError("no pipeline here")

    client.pipeline = refusing_pipeline  # type: ignore[method-assign]
    answers = await asyncio.wait_for(
        asyncio.gather(
            *(batcher.call(script, (f"k{i % 2}",), (), [str(i)]) for i in range(4)),
            return_exceptions=True,
        ),
        5,
    )
    assert all(isinstance(a, RuntimeError) for a in answers)


async def test_a_run_answering_the_wrong_number_of_callers_fails_them_instead_of_guessing(
    client: aioredis.Redis,
) -> None:
    one_answer = client.register_script("return {'only one'}")
    batcher = ScriptBatcher(client)
    answers = await asyncio.gather(
        *(batcher.call(one_answer, ("k",), (), [str(i)]) for i in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(a, RuntimeError) and "wrongly" in str(a) for a in answers)
