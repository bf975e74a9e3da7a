"""The one poll-until loop of the tests and the bench: a condition, a deadline, a message."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


# ``T | None`` -> ``T``: a falsy value is never returned, so a condition that answers "the thing,
# or None for not yet" gives the thing.
@overload
async def wait_until(
    condition: Callable[[], Awaitable[T | None]], timeout: float, what: str, interval: float = 0.1
) -> T: ...


@overload
async def wait_until(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T: ...


async def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1
) -> object:
    """Poll ``condition`` (sync or async) until it returns something truthy, and return that.

    At the deadline it raises ``TimeoutError`` naming ``what`` and the last value seen; an
    exception from ``condition`` (say, "the API exited") ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval)


def wait_until_blocking(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T:
    """``wait_until`` for code that has no event loop running (a plain test function)."""
    return asyncio.run(wait_until(condition, timeout, what, interval))
