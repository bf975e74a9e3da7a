"""A cancellation always stops a wait with a deadline, even one whose awaited thing finishes in
the same loop tick (Python 3.11's ``asyncio.wait_for`` returns normally then: a loop told to
stop would wait and poll on for ever)."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from app.waits import cancel_and_wait, until_set, within

ROOT = Path(__file__).resolve().parents[2]


class _Poller:
    """A loop that waits for its wake-up with a deadline between two passes, as the exporter,
    the reconciler and the consumer's batch gathering do."""

    def __init__(self, wait: Callable[[asyncio.Event], Awaitable[object]]) -> None:
        self.wait = wait
        self.wake = asyncio.Event()
        self.waiting = asyncio.Event()
        self.done = False  # the test's own way out, should the cancellation be lost

    async def run(self) -> None:
        while not self.done:
            self.waiting.set()
            await self.wait(self.wake)
            self.waiting.clear()
            self.wake.clear()


async def _stops_when_cancelled(wait: Callable[[asyncio.Event], Awaitable[object]]) -> bool:
    """Cancel the poller in the tick its wait's awaitable finishes; whether it stopped."""
    poller = _Poller(wait)
    task = asyncio.create_task(poller.run())
    await poller.waiting.wait()
    await asyncio.sleep(0)  # the poller is suspended in its wait
    poller.wake.set()
    task.cancel()  # the same tick
    done, _ = await asyncio.wait([task], timeout=1.0)
    poller.done = True
    poller.wake.set()
    await asyncio.wait([task], timeout=1.0)
    return bool(done) and task.cancelled()


async def test_within_passes_a_cancellation_that_arrives_as_its_awaitable_finishes() -> None:
    assert await _stops_when_cancelled(lambda wake: within(wake.wait(), 10))


async def test_until_set_passes_a_cancellation_that_arrives_as_its_event_is_set() -> None:
    assert await _stops_when_cancelled(lambda wake: until_set(wake, 10))


async def test_asyncio_wait_for_here_loses_that_cancellation_which_is_why_app_does_not_use_it() -> (
    None
):
    """The fault the helpers exist for, on this interpreter (3.12 and later fixed it)."""
    lost = not await _stops_when_cancelled(lambda wake: asyncio.wait_for(wake.wait(), 10))
    assert lost == (sys.version_info < (3, 12))


async def test_within_raises_timeout_error_at_its_deadline_and_returns_the_result_before() -> None:
    assert await within(asyncio.sleep(0, "answer"), 1) == "answer"
    with pytest.raises(TimeoutError):
        await within(asyncio.Event().wait(), 0.01)


async def test_until_set_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await until_set(event, 0.01) is False
    event.set()
    assert await until_set(event, 10) is True


def test_no_service_bench_or_harness_module_awaits_with_wait_for_or_suppresses_a_cancel() -> None:
    found = []
    for folder in ("app", "bench", "harness"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == "wait_for"
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "asyncio"
                ) or (
                    isinstance(node, ast.Call)
                    and ast.unparse(node.func).endswith("suppress")
                    and "CancelledError" in ast.unparse(node)
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"use app.waits.within / until_set / cancel_and_wait: {found}"


async def _stopper_is_cancellable(stop: Callable[[asyncio.Task[None]], Awaitable[None]]) -> bool:
    """A caller stopping a task that takes its time to wind down is cancelled meanwhile; whether
    the caller's cancellation reached it (it must not carry on as if it had stopped the task)."""
    release = asyncio.Event()
    winding_down = asyncio.Event()
    carried_on: list[bool] = []

    async def worker() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            winding_down.set()
            await release.wait()  # closing its connections, say
            raise

    async def caller(task: asyncio.Task[None]) -> None:
        await stop(task)
        carried_on.append(True)

    work = asyncio.create_task(worker())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(caller(work))
    await winding_down.wait()
    stopping.cancel()
    await asyncio.wait([stopping], timeout=1.0)
    release.set()
    await asyncio.wait([stopping, work], timeout=1.0)
    return stopping.cancelled() and not carried_on


async def test_cancel_and_wait_leaves_the_callers_own_cancellation_alone() -> None:
    assert await _stopper_is_cancellable(cancel_and_wait)


async def test_cancel_then_await_under_suppress_swallows_the_callers_cancellation() -> None:
    """The pattern cancel_and_wait replaces."""

    async def suppressing(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert not await _stopper_is_cancellable(suppressing)


async def test_cancel_and_wait_ends_the_task_and_raises_what_it_failed_with() -> None:
    async def sleeper() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()

    async def broken() -> None:
        raise ValueError("failed before it was stopped")

    failed = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="before it was stopped"):
        await cancel_and_wait(failed)
