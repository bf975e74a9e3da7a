"""Chaos helpers: load waves, fault hooks, the verify run and the per-scenario report line."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.adapters.dead_letters import list_dead_letters
from app.adapters.kafka import running
from app.adapters.postgres_setup import consumer_connection_name
from app.config import Settings
from app.domain.codec import DecodeError, decode
from app.local.stack import child_env
from harness import wait_until
from tests.stack import Stack

REPORT_ENV = "COUPON_CHAOS_REPORT"


@dataclass
class Sale:
    """Every answer the API gave during one scenario, by status code."""

    coupons: list[str]
    answers: Counter[int] = field(default_factory=Counter)
    accepted_users: dict[str, set[str]] = field(default_factory=dict)
    accepted_per_coupon: Counter[str] = field(default_factory=Counter)

    @property
    def accepted(self) -> int:
        return self.answers[202]

    @property
    def requests(self) -> int:
        return sum(self.answers.values())

    async def wave(self, stack: Stack, users: Sequence[str]) -> Counter[int]:
        """Every user presses on every coupon of the sale, all at once."""
        presses = [(c, u) for c in self.coupons for u in users]
        responses = await asyncio.gather(*(self.press(stack, c, u) for c, u in presses))
        return Counter(r.status_code for r in responses)

    async def press(self, stack: Stack, coupon: str, user: str) -> httpx.Response:
        r = await stack.request_issue(coupon, user)
        self._note(coupon, user, r)
        assert r.status_code < 500 or r.status_code == 503, r.text
        return r

    def _note(self, coupon: str, user: str, r: httpx.Response) -> None:
        self.answers[r.status_code] += 1
        if r.status_code == 202:
            self.accepted_users.setdefault(coupon, set()).add(user)
            self.accepted_per_coupon[coupon] += 1

    async def drain(self, stack: Stack, timeout: float = 90) -> None:
        """Wait until every accepted request of the sale has its row (one row per acceptance)."""
        for coupon in self.coupons:
            await stack.wait_processed(coupon, self.accepted_per_coupon[coupon], timeout)


def users(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


@dataclass(frozen=True, slots=True)
class Answer:
    """One press of a steady load: who, when it was sent and answered, and what it was told."""

    user: str
    sent: float  # time.monotonic()
    done: float
    code: int
    status: str | None  # a 202's QUEUED / UNCONFIRMED
    request_id: UUID | None


@dataclass
class SteadyPresses:
    """``workers`` users pressing one after another (each press a new user) on one coupon of
    ``sale`` until stopped, through a fault: every answer with its timing (``async with``)."""

    sale: Sale
    stack: Stack
    coupon: str
    prefix: str
    workers: int = 4
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _next: int = 0

    async def __aenter__(self) -> SteadyPresses:
        self._tasks = [asyncio.create_task(self._press_on()) for _ in range(self.workers)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)  # a worker's failed assertion surfaces here

    async def _press_on(self) -> None:
        while not self._stop.is_set():
            user, self._next = f"{self.prefix}-{self._next}", self._next + 1
            sent = time.monotonic()
            r = await self.sale.press(self.stack, self.coupon, user)
            body = r.json()
            status = body.get("status") if r.status_code == 202 else None
            request_id = UUID(body["requestId"]) if r.status_code == 202 else None
            self.answers.append(
                Answer(user, sent, time.monotonic(), r.status_code, status, request_id)
            )

    def since(self, t: float) -> list[Answer]:
        """Answers to presses sent at ``t`` or later."""
        return [a for a in self.answers if a.sent >= t]

    async def wait_for(
        self, what: str, n: int, after: float, timeout: float = 60, **match: Any
    ) -> None:
        """Wait until ``n`` presses sent after ``after`` were answered with ``match`` (code, status)."""

        def enough() -> bool:
            found = [
                a for a in self.since(after) if all(getattr(a, k) == v for k, v in match.items())
            ]
            return len(found) >= n

        await wait_until(enough, timeout, what)

    def ack_gap_s(self, start: float, end: float) -> float:
        """Longest time between ``start`` and ``end`` in which no press was acknowledged (202
        QUEUED): how long the sale was unavailable to anyone."""
        acks = sorted(
            a.done for a in self.answers if a.status == "QUEUED" and start < a.done <= end
        )
        marks = [start, *acks, end]
        return round(max(b - a for a, b in itertools.pairwise(marks)), 1)


async def topic_request_ids(settings: Settings, deadline_s: float = 60) -> Counter[UUID]:
    """How many times each request id is in the request topic, read from its start to its end
    (the high watermark: what every in-sync replica holds)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    found: Counter[UUID] = Counter()
    async with running(consumer):
        tps = [TopicPartition(settings.topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        give_up = time.monotonic() + deadline_s
        while remaining:
            assert time.monotonic() < give_up, f"could not read {sorted(remaining)} to the end"
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < ends[tp]:
                        with contextlib.suppress(DecodeError):
                            found[decode(record.value).request_id] += 1
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    return found


async def blocked_consumers(stack: Stack) -> set[int]:
    """Indexes of this stack's consumer processes with a batch blocked on a row lock right now.

    PostgreSQL names the client port of each waiting backend; /proc says which process owns it.
    """
    ports = {
        r["client_port"]
        for r in await stack.pool.fetch(
            "SELECT client_port FROM pg_stat_activity WHERE application_name = $1"
            " AND wait_event_type = 'Lock'",
            consumer_connection_name(stack.settings.consumer_group),
        )
    }
    database_port = urlparse(stack.settings.database_url).port
    assert database_port is not None, "the session's DSN names its port"
    inode_of_port = _local_port_inodes(database_port)
    wanted = {inode_of_port[p] for p in ports if p in inode_of_port}
    return {
        i for i in stack.live_consumers() if _socket_inodes(stack.consumers[i].popen.pid) & wanted
    }


def _local_port_inodes(remote_port: int) -> dict[int, str]:
    """Socket inode by local port, for connections to ``remote_port`` only: Linux reuses an
    ephemeral port for connections to other destinations, so the local port alone is ambiguous."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == remote_port:
                    found[int(fields[1].rsplit(":", 1)[1], 16)] = fields[9]
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


async def wait_blocked(stack: Stack, every: bool) -> set[int]:
    """Wait until one consumer (or every live one) is blocked mid-batch; returns which are."""

    async def blocked() -> set[int]:
        now = await blocked_consumers(stack)
        return now if now and (not every or set(stack.live_consumers()) <= now) else set()

    what = "every live consumer" if every else "a consumer"
    return await wait_until(blocked, 60, f"{what} to block mid-batch on the row lock")


async def counter_sum(stack: Stack, indexes: Sequence[int], sample: str) -> float:
    """Sum one sample over these consumers' /metrics (a consumer that does not answer fails)."""
    total = 0.0
    for i in indexes:
        metrics = await stack.consumer_metrics(i)
        assert metrics is not None, f"consumer {i} does not answer /metrics"
        total += metrics.get(sample, 0.0)
    return total


async def dead_letters_for(settings: Settings, coupons: Sequence[str]) -> int:
    keys = {c.encode() for c in coupons}
    entries = await list_dead_letters(settings.kafka_bootstrap, settings.dlq_topic)
    return sum(e.letter.original_key in keys for e in entries)


_CLI_HAS_VERIFY: bool | None = None


async def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        env=child_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def run_verify(settings: Settings) -> dict[str, Any]:
    """``coupon-issuer verify --json`` over the whole schema; fails the test on any violation."""
    global _CLI_HAS_VERIFY
    if _CLI_HAS_VERIFY is None:
        _CLI_HAS_VERIFY = (await cli(settings, "verify", "--help"))[0] == 0
    if _CLI_HAS_VERIFY:
        code, out, err = await cli(settings, "verify", "--json")
        assert code in (0, 1), f"verify crashed ({code}): {err[-2000:]}"
        report: dict[str, Any] = json.loads(out)
        assert (code == 0) == report["ok"], (code, report)
    else:  # until the subcommand is wired: the same function, in process
        from app.verify import verify

        report = (await verify(settings, None)).to_dict()
    assert report["ok"], "verify found violations:\n" + json.dumps(report["violations"], indent=1)
    return report


def record(
    capsys: pytest.CaptureFixture[str],
    scenario: str,
    sale: Sale,
    report: dict[str, Any],
    started: float,
    **extra: Any,
) -> dict[str, Any]:
    """One line on the terminal and, if $COUPON_CHAOS_REPORT is set, one JSON line in that file."""
    mine = [c for c in report["coupons"] if c["coupon_id"] in set(sale.coupons)]
    line = {
        "scenario": scenario,
        "requests": sale.requests,
        "accepted": sale.accepted,
        "issued": sum(c["issued_quantity"] for c in mine),
        "rejected": sum(c["rejected_total"] for c in mine),
        "dead_lettered": sum(c["dead_lettered"] for c in mine),
        "gate_refused": {str(k): v for k, v in sorted(sale.answers.items()) if k != 202},
        "violations": len(report["violations"]),
        "seconds": round(time.monotonic() - started, 1),
        **extra,
    }
    with capsys.disabled():
        print(
            f"\n[chaos] {scenario}: requests={line['requests']} accepted={line['accepted']}"
            f" issued={line['issued']} rejected={line['rejected']}"
            f" dead_lettered={line['dead_lettered']} violations={line['violations']}"
            f" refused={line['gate_refused']} {line['seconds']}s"
            + "".join(f" {k}={v}" for k, v in extra.items())
        )
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
    return line
