"""The gate's script calls of one loop tick share one pipeline: against the real Redis, each
caller still gets its own answer or its own error, and a flushed script cache is survived."""

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

# Echo the argument, or fail for "boom": a per-call error inside a shared pipeline.
_ECHO = "if ARGV[1] == 'boom' then return redis.error_reply('boom') end return ARGV[1]"


@pytest_asyncio.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(redis_url())
    yield c
    await c.aclose()


@pytest_asyncio.fixture
async def echo(client: aioredis.Redis) -> tuple[AsyncScript, ScriptBatcher]:
    """A script answering its first argument (raising on "boom"), and a batcher on ``client``."""
    return client.register_script(_ECHO), ScriptBatcher(client)


async def test_one_tick_of_calls_is_one_pipeline_with_an_answer_each(
    client: aioredis.Redis, echo: tuple[AsyncScript, ScriptBatcher]
) -> None:
    script, batcher = echo
    await script(keys=["k"], args=["warm"])  # loaded once
    sent: list[int] = []
    original = client.pipeline

    def counting_pipeline(transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        sent.append(1)
        return original(transaction, shard_hint)

    client.pipeline = counting_pipeline  # type: ignore[method-assign]
    answers = await asyncio.gather(
        *(batcher.call(script, ["k"], [f"v{i}"]) for i in range(50)), return_exceptions=True
    )
    assert answers == [f"v{i}".encode() for i in range(50)]
    assert len(sent) == 1  # fifty callers, one round trip


async def test_an_error_reaches_only_its_caller(echo: tuple[AsyncScript, ScriptBatcher]) -> None:
    script, batcher = echo
    answers = await asyncio.gather(
        batcher.call(script, ["k"], ["a"]),
        batcher.call(script, ["k"], ["boom"]),
        batcher.call(script, ["k"], ["c"]),
        return_exceptions=True,
    )
    assert answers[0] == b"a" and answers[2] == b"c"
    assert isinstance(answers[1], ResponseError) and "boom" in str(answers[1])


async def test_a_flushed_script_cache_is_reloaded(
    client: aioredis.Redis, echo: tuple[AsyncScript, ScriptBatcher]
) -> None:
    script, batcher = echo
    await script(keys=["k"], args=["warm"])
    await client.script_flush()  # as after a Redis restart
    answers = await asyncio.gather(*(batcher.call(script, ["k"], [str(i)]) for i in range(5)))
    assert answers == [str(i).encode() for i in range(5)]
    assert (await client.script_exists(script.sha)) == [True]


async def test_a_lost_connection_reaches_every_caller_of_the_batch() -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    try:
        script = dead.register_script(_ECHO)
        batcher = ScriptBatcher(dead)
        answers = await asyncio.gather(
            *(batcher.call(script, ["k"], [str(i)]) for i in range(3)), return_exceptions=True
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
            *(batcher.call(script, ["k"], [str(i)]) for i in range(4)), return_exceptions=True
        ),
        5,
    )
    assert all(isinstance(a, RuntimeError) for a in answers)


# Count this group's runs in KEYS[1], answer each caller's argument back (fail if one is "boom").
_MERGED = """
redis.call('INCR', KEYS[1])
local answers = {}
for i = 1, #ARGV do
  if ARGV[i] == 'boom' then return redis.error_reply('boom') end
  answers[i] = ARGV[i]
end
return answers
"""


async def test_merged_calls_of_one_group_are_one_script_run_with_an_answer_each(
    client: aioredis.Redis,
) -> None:
    script, batcher = client.register_script(_MERGED), ScriptBatcher(client)
    groups = [f"t:{uuid.uuid4().hex[:10]}:{name}" for name in ("a", "b")]
    answers = await asyncio.gather(
        *(batcher.call_merged(script, (groups[i % 2],), (), [f"v{i}"]) for i in range(40)),
        batcher.call(script, [groups[0]], ["alone"]),  # a plain call beside them, its own run
    )
    assert answers[:40] == [f"v{i}".encode() for i in range(40)]
    assert answers[40] == [b"alone"]
    # forty callers, two groups: one run each, and one for the plain call
    assert [int(await client.get(g) or 0) for g in groups] == [2, 1]
    await client.delete(*groups)


async def test_an_error_in_a_merged_call_reaches_its_group_only(client: aioredis.Redis) -> None:
    script, batcher = client.register_script(_MERGED), ScriptBatcher(client)
    failing, fine = (f"t:{uuid.uuid4().hex[:10]}:{name}" for name in ("failing", "fine"))
    answers = await asyncio.gather(
        batcher.call_merged(script, (failing,), (), ["a"]),
        batcher.call_merged(script, (fine,), (), ["b"]),
        batcher.call_merged(script, (failing,), (), ["boom"]),
        return_exceptions=True,
    )
    assert isinstance(answers[0], ResponseError) and isinstance(answers[2], ResponseError)
    assert answers[1] == b"b"
    await client.delete(failing, fine)


async def test_merged_calls_survive_a_flushed_script_cache(client: aioredis.Redis) -> None:
    script, batcher = client.register_script(_MERGED), ScriptBatcher(client)
    group = f"t:{uuid.uuid4().hex[:10]}:flushed"
    await script(keys=[group], args=["warm"])
    await client.script_flush()  # as after a Redis restart
    answers = await asyncio.gather(
        *(batcher.call_merged(script, (group,), (), [str(i)]) for i in range(5)),
        batcher.call(script, [group], ["plain"]),  # two calls in the pipeline: both NOSCRIPT
    )
    assert answers == [*(str(i).encode() for i in range(5)), [b"plain"]]
    await client.delete(group)
