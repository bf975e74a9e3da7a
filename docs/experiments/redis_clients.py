"""The client CPU of a Redis script call: redis-py (with hiredis) against valkey-glide (a Rust
core), alone, 32 in one pipeline (as the gate's batcher sends a tick's calls) and 32 at once.

The script reads and writes a hash as the gate's does. Each shape runs both clients in turn,
twice. See README.md for how to run it.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
from collections.abc import Awaitable, Callable

import redis.asyncio as redis_py
import uvloop
from glide import Batch, GlideClient, GlideClientConfiguration, NodeAddress, Script

LUA = (
    "local holder = redis.call('HGET', KEYS[1], ARGV[1]) "
    "if not holder then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end "
    "return {0, 1, 2}"
)
KEY = "client-cpu:holders"


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(host: str, port: int, calls: int) -> None:
    py = redis_py.Redis(host=host, port=port)
    sha = await py.script_load(LUA)
    glide = await GlideClient.create(GlideClientConfiguration([NodeAddress(host, port)]))
    script = Script(LUA)
    n = 0

    def user() -> str:
        nonlocal n
        n += 1
        return f"u{n}"

    async def py_lone() -> None:
        await py.evalsha(sha, 1, KEY, user(), "r")

    async def glide_lone() -> None:
        await glide.invoke_script(script, keys=[KEY], args=[user(), "r"])

    async def py_pipeline() -> None:
        async with py.pipeline(transaction=False) as pipe:
            for _ in range(32):
                pipe.evalsha(sha, 1, KEY, user(), "r")
            await pipe.execute()

    async def glide_pipeline() -> None:
        batch = Batch(is_atomic=False)
        for _ in range(32):
            batch.custom_command(["EVALSHA", sha, "1", KEY, user(), "r"])
        await glide.exec(batch, raise_on_error=True)

    async def py_at_once() -> None:
        await asyncio.gather(*(py_lone() for _ in range(32)))

    async def glide_at_once() -> None:
        await asyncio.gather(*(glide_lone() for _ in range(32)))

    shapes: list[tuple[str, int, dict[str, Callable[[], Awaitable[None]]]]] = [
        ("one call alone", 1, {"redis-py": py_lone, "glide": glide_lone}),
        ("32 in one pipeline", 32, {"redis-py": py_pipeline, "glide": glide_pipeline}),
        ("32 calls at once", 32, {"redis-py": py_at_once, "glide": glide_at_once}),
    ]
    for _ in range(2):
        for shape, per, clients in shapes:
            for name, run in clients.items():
                for _ in range(50):
                    await run()
                cpu = process_cpu()
                for _ in range(calls // per):
                    await run()
                spent = (process_cpu() - cpu) / (calls // per * per) * 1e6
                print(f"{shape:20s} {name:8s} {spent:6.1f} µs of CPU per call", flush=True)
    await py.delete(KEY)
    await glide.close()
    await py.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--calls", type=int, default=20_000, help="per client and shape")
    args = parser.parse_args()
    uvloop.run(measure(args.host, args.port, args.calls))


if __name__ == "__main__":
    main()
