"""Deadlines on awaits that never lose a cancellation, as Python 3.11's ``asyncio.wait_for`` can.

On Python 3.11 ``asyncio.wait_for`` returns the awaited result instead of raising
``CancelledError`` when its task is cancelled in the loop tick in which the awaited thing finishes
(cpython gh-86296; 3.12 rebuilt ``wait_for`` on ``asyncio.timeout``). The cancellation is lost: a
polling loop told to stop waits on and polls again, for ever, and whatever awaits it hangs. The
bench met it: its lag sampler, cancelled as a lag read finished, held a whole run. ``asyncio.timeout``
awaits in the caller's own task, so a cancellation always reaches the await it interrupts.

Stopping a task of one's own has the same trap: ``task.cancel()`` then ``await task`` under
``suppress(CancelledError)`` also swallows the caller's own cancellation, should it arrive while
the task winds down. :func:`cancel_and_wait` tells the two apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``await awaitable``, raising ``TimeoutError`` after ``seconds`` (None: no deadline)."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def until_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event`` (a stop signal between two polls); whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` (a no-op if it has ended) and wait until it has; raise what it failed with.

    ``asyncio.wait`` never raises the task's ``CancelledError`` and never absorbs the caller's: a
    caller cancelled meanwhile is cancelled, and leaves the task to end on its own.
    """
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and (error := task.exception()) is not None:
        raise error
