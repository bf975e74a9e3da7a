"""The operator run by a test: each start a thread with an event loop of its own, all stopped
together. kopf cancels every task of its loop that it did not start at exit, which in the tests'
shared loop would be theirs, so it never runs there."""

from __future__ import annotations

import asyncio
import threading

import kopf

from app.autoscaling.operator import operate


class OperatorThreads:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, namespace: str, connection: kopf.ConnectionInfo) -> None:
        """Run the operator for ``namespace`` until ``stop_all``."""
        run = operate([namespace], connection=connection, stop_flag=self._stop)
        thread = threading.Thread(target=asyncio.run, args=(run,), name="operator")
        thread.start()
        self._threads.append(thread)

    def stop_all(self, timeout: float = 20) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=timeout)
            assert not thread.is_alive(), "the operator did not stop"
