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


def stop_on_signals(stop: Callable[[], object]) -> None:
    """SIGTERM (Kubernetes) and SIGINT (Ctrl-C) call ``stop`` on the running loop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


def stop_event_on_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets."""
    stop = asyncio.Event()
    stop_on_signals(stop.set)
    return stop
