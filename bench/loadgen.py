"""The load generator: flash-sale presses sent through the real HTTP API from worker processes.

Each generator is its own process (on a 2-core machine it competes with the server for CPU, so
its share is measured and reported). A process runs ``concurrency`` aiohttp tasks over keep-alive
connections, sends its slice of the request plan once, and stops by itself at the end of the plan
or at the deadline, whichever comes first. Loopback only: the target URL is built from a port.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import signal
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import aiohttp
import orjson

# Outcome codes, one byte per request in the results (reasons come from the API's JSON body).
ACCEPTED = 1
CODES: dict[str, int] = {
    "NOT_SENT": 0,
    "ACCEPTED": ACCEPTED,
    "DUPLICATE": 2,
    "SOLD_OUT": 3,
    "EXPIRED": 4,
    "NOT_FOUND": 5,
    "RATE_LIMITED": 6,
    "BROKER_UNAVAILABLE": 7,
    "UNAVAILABLE": 8,
    "HTTP_ERROR": 9,
    "TRANSPORT_ERROR": 10,
    "TIMEOUT": 11,
    # A 202 whose publish was not acknowledged in time: it lands later and is issued, or never
    # lands and the reconciler settles it FAILED. Not a gate decision the check can count on.
    "UNCONFIRMED": 12,
}
NAMES = {code: name for name, code in CODES.items()}
# Answers that say what the gate decided for the user (the correctness check counts their users).
DEFINITIVE = frozenset({CODES["ACCEPTED"], CODES["DUPLICATE"], CODES["SOLD_OUT"]})
_PROGRESS_EVERY = 50


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """Who presses which coupon, in sending order: ``coupon_index[i]`` and ``user_index[i]``."""

    coupon_ids: tuple[str, ...]
    coupon_index: array[int]
    user_index: array[int]

    def __len__(self) -> int:
        return len(self.coupon_index)


def make_plan(
    coupon_ids: Sequence[str], requests: int, duplicate_ratio: float, seed: int
) -> RequestPlan:
    """``requests`` presses; a ``duplicate_ratio`` share repeats an earlier (user, coupon) pair.

    User k presses coupon k mod C, so each coupon has about ``distinct/C`` distinct users.
    """
    rng = random.Random(seed)
    distinct = max(1, round(requests * (1 - duplicate_ratio)))
    users = list(range(distinct)) + [rng.randrange(distinct) for _ in range(requests - distinct)]
    rng.shuffle(users)
    n = len(coupon_ids)
    return RequestPlan(tuple(coupon_ids), array("i", (u % n for u in users)), array("i", users))


def user_name(index: int) -> str:
    return f"bench-u{index}"


@dataclass
class GeneratorResult:
    """What one generator process measured; ``codes``/``latencies`` align with its slice."""

    indices: array[int]  # positions in the plan
    codes: bytearray
    latencies: array[float]  # seconds, per request (0 for not sent)
    finished_at: array[float]  # time.time() when the answer arrived (0 for not sent)
    request_ids: list[str] = field(default_factory=list)  # the 202s queued (acknowledged)
    unconfirmed: dict[int, str] = field(default_factory=dict)  # position -> request id
    started_at: float = 0.0
    cpu_seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class GeneratorJob:
    """The picklable work order of one generator process."""

    slot: int
    port: int
    concurrency: int
    deadline_s: float
    request_timeout_s: float
    coupon_ids: tuple[str, ...]
    indices: array[int]
    coupon_index: array[int]
    user_index: array[int]


async def _send_all(job: GeneratorJob, result: GeneratorResult, progress: Any) -> None:
    base = f"http://127.0.0.1:{job.port}/api/coupons/"
    urls = [f"{base}{cid}/issue/queue" for cid in job.coupon_ids]
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=job.request_timeout_s)
    connector = aiohttp.TCPConnector(limit=job.concurrency, limit_per_host=job.concurrency)
    next_item = 0
    done = 0
    accepted = 0
    stop_at = time.monotonic() + job.deadline_s
    slot = job.slot * 2

    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
    ) as session:

        async def worker() -> None:
            nonlocal next_item, done, accepted
            while next_item < len(job.indices) and time.monotonic() < stop_at:
                i = next_item
                next_item += 1
                body = b'{"userId":"' + user_name(job.user_index[i]).encode() + b'"}'
                started = time.perf_counter()
                code = await _press(session, urls[job.coupon_index[i]], body, headers, result, i)
                result.latencies[i] = time.perf_counter() - started
                result.finished_at[i] = time.time()
                result.codes[i] = code
                done += 1
                accepted += code == ACCEPTED
                if done % _PROGRESS_EVERY == 0:
                    progress[slot] = done
                    progress[slot + 1] = accepted

        result.started_at = time.time()
        await asyncio.gather(*(worker() for _ in range(job.concurrency)))
    progress[slot] = done
    progress[slot + 1] = accepted


async def _press(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    result: GeneratorResult,
    position: int,
) -> int:
    try:
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
    except TimeoutError:
        return CODES["TIMEOUT"]
    except aiohttp.ClientError as exc:
        result.errors[type(exc).__name__] += 1
        return CODES["TRANSPORT_ERROR"]
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return CODES["HTTP_ERROR"]
    if response.status == 202:
        if doc.get("status") == "UNCONFIRMED":
            result.unconfirmed[position] = str(doc["requestId"])
            return CODES["UNCONFIRMED"]
        result.request_ids.append(str(doc["requestId"]))
        return ACCEPTED
    reason = doc.get("reason") if isinstance(doc, dict) else None
    return CODES.get(str(reason), CODES["HTTP_ERROR"])


def generator_main(
    job: GeneratorJob,
    progress: Any,
    ready: Any,
    go: MpEvent,
    out: Connection,
) -> None:
    """Process entry point: wait for the start signal, send the slice, return the result.

    Ctrl-C reaches every process of the terminal's group: the bench stops its generators
    itself, so a generator leaves SIGINT to it (no traceback of each one on the way out)."""
    import uvloop

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    n = len(job.indices)
    result = GeneratorResult(
        indices=job.indices,
        codes=bytearray(n),
        latencies=array("d", bytes(8 * n)),
        finished_at=array("d", bytes(8 * n)),
    )
    with ready.get_lock():
        ready.value += 1
    go.wait()
    cpu_before = _cpu_seconds()
    uvloop.run(_send_all(job, result, progress))
    result.cpu_seconds = _cpu_seconds() - cpu_before
    try:
        out.send(result)
    except BrokenPipeError:
        return  # the bench stopped waiting for it (interrupted): nobody to report to
    out.close()


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def split_plan(plan: RequestPlan, generators: int) -> list[array[int]]:
    """Round-robin slices, so every generator sees the same mix of coupons and duplicates."""
    return [array("i", range(g, len(plan), generators)) for g in range(generators)]


@dataclass
class GeneratorFleet:
    """The generator processes of one run, started together on one signal."""

    processes: Sequence[mp.process.BaseProcess]
    pipes: list[Connection]
    progress: Any  # a shared ctypes array of int64: (answered, accepted) per generator
    ready: Any
    go: MpEvent

    @classmethod
    def start(
        cls,
        plan: RequestPlan,
        port: int,
        generators: int,
        concurrency: int,
        deadline_s: float,
        request_timeout_s: float = 10.0,
    ) -> GeneratorFleet:
        ctx = mp.get_context("spawn")
        progress = ctx.Array("q", 2 * generators, lock=False)
        ready = ctx.Value("i", 0)
        go = ctx.Event()
        processes, pipes = [], []
        per_process = max(1, concurrency // generators)
        for slot, indices in enumerate(split_plan(plan, generators)):
            job = GeneratorJob(
                slot=slot,
                port=port,
                concurrency=per_process,
                deadline_s=deadline_s,
                request_timeout_s=request_timeout_s,
                coupon_ids=plan.coupon_ids,
                indices=indices,
                coupon_index=array("i", (plan.coupon_index[i] for i in indices)),
                user_index=array("i", (plan.user_index[i] for i in indices)),
            )
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=generator_main,
                args=(job, progress, ready, go, send),
                name=f"bench-generator-{slot}",
                daemon=True,
            )
            proc.start()
            send.close()
            processes.append(proc)
            pipes.append(receive)
        return cls(processes, pipes, progress, ready, go)

    def all_ready(self) -> bool:
        return bool(self.ready.value == len(self.processes))

    def release(self) -> None:
        self.go.set()

    def answered(self) -> tuple[int, int]:
        """Requests answered and accepted so far, across the fleet."""
        values = list(self.progress)
        return sum(values[0::2]), sum(values[1::2])

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def results(self, timeout_s: float) -> list[GeneratorResult]:
        """Collect every process's result (blocking), then reap the processes."""
        out: list[GeneratorResult] = []
        for pipe, proc in zip(self.pipes, self.processes, strict=True):
            if not pipe.poll(timeout_s):
                raise TimeoutError(f"{proc.name} sent no result within {timeout_s}s")
            out.append(pipe.recv())
            proc.join(10)
        return out

    def stop(self) -> None:
        for proc in self.processes:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
