"""Time series during a phase: consumer lag (the lag reader), processed rows, replicas, answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from app.adapters.kafka_lag import LagReader, LagReadError
from app.waits import cancel_and_wait
from bench import db


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds since the phase started
    processed: int  # rows in issue_requests
    lag: int | None  # messages the group still has to consume (None: the read failed)
    replicas: int  # live consumer processes
    answered: int  # HTTP answers so far (0 outside the flash sale)
    accepted: int  # 202 answers so far


@dataclass
class Sampler:
    """Reads one sample at a time; the phase decides when to stop."""

    conn: asyncpg.Connection
    lag_reader: LagReader | None
    topic: str
    group: str
    replicas: Callable[[], int]
    answers: Callable[[], tuple[int, int]] = lambda: (0, 0)
    lag_every_s: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    _t0: float = field(default_factory=time.monotonic)
    _last_lag: int | None = None
    _lag_task: asyncio.Task[None] | None = None

    def restart_clock(self) -> None:
        self._t0 = time.monotonic()

    async def __aenter__(self) -> Sampler:
        if self.lag_reader is not None:
            self._lag_task = asyncio.create_task(self._read_lag_forever(self.lag_reader))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._lag_task is not None:
            await cancel_and_wait(self._lag_task)

    async def _read_lag_forever(self, reader: LagReader) -> None:
        """Lag at its own pace, so a slow broker read never delays the row counts."""
        while True:
            try:
                self._last_lag = (await reader.read(self.topic, self.group)).total_lag
            except (LagReadError, OSError):
                self._last_lag = None
            await asyncio.sleep(self.lag_every_s)

    async def sample(self) -> Sample:
        now = time.monotonic()
        answered, accepted = self.answers()
        s = Sample(
            t=now - self._t0,
            processed=await db.processed_count(self.conn),
            lag=self._last_lag,
            replicas=self.replicas(),
            answered=answered,
            accepted=accepted,
        )
        self.samples.append(s)
        return s

    def as_dicts(self) -> list[dict[str, Any]]:
        return [
            {
                "t": round(s.t, 3),
                "processed": s.processed,
                "lag": s.lag,
                "replicas": s.replicas,
                "answered": s.answered,
                "accepted": s.accepted,
            }
            for s in self.samples
        ]
