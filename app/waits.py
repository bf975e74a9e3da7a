"""Deadlines on awaits that never lose a cancellation, as Python 3.11's ``asyncio.wait_for`` can.

On Python 3.11 ``asyncio.wait_for`` returns the awaited result instead of raising
``CancelledError`` when its task is cancelled in the loop tick in which the awaited thing finishes
(cpython gh-86296; 3.12 rebuilt ``wait_for`` on ``asyncio.timeout``). The cancellation is lost: a
polling loop told to stop waits on and polls again, for ever, and whatever awaits it hangs. The
bench met it: its lag sampler, cancelled as a lag read finished, held a whole run. ``asyncio.timeout``
awaits in the caller's own task, so a cancellation always reaches the await it interrupts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

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
