"""How every process runs and stops: its event loop, and SIGTERM/SIGINT as a graceful stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on uvloop (asyncio's own loop where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep asyncio as a fallback
        return asyncio.run(coro)
    return uvloop.run(coro)


def stop_on_signals(stop: Callable[[], object], *more: signal.Signals) -> None:
    """SIGTERM (Kubernetes), SIGINT (Ctrl-C) and ``more`` call ``stop`` on the running loop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, *more):
        loop.add_signal_handler(sig, stop)


def stop_event_on_signals(*more: signal.Signals) -> asyncio.Event:
    """An event that SIGTERM, SIGINT or one of ``more`` sets."""
    stop = asyncio.Event()
    stop_on_signals(stop.set, *more)
    return stop
