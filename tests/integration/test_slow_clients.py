"""Slow clients against the real API process: a request's head and body have a deadline, and a
process serves a bounded number of connections (app/api/connections.py, docs/security.md)."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from harness import wait_until
from tests.stack import Stack, isolated_settings, stack_fixture

BOUND_S = 5.0  # head and body timeout of the flooded API: long enough to open the whole flood
CLOSE_SLACK_S = 10.0  # how late past the bound a close may come on a loaded 2-core box
FAST_S = 2.5  # generous: a probe slower than this while the flood is held means it is not bounded
SILENT, HEAD, TRICKLE, BODY = "silent", "head", "trickle", "body"
FLOOD = {SILENT: 300, HEAD: 400, TRICKLE: 50, BODY: 400}  # 1150 connections held at once


@pytest.fixture(scope="module", autouse=True)
def open_files() -> Iterator[None]:
    """The flood needs more descriptors than the usual soft limit of 1024 (the API raises its
    own, app/api/connections.py); the spawned API inherits this one too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


flooded = stack_fixture(
    "flooded",
    "Short head and body deadlines; a cap above the flood, so only the deadlines close them.",
    scope="module",
    consumers=0,
    api_head_timeout_s=BOUND_S,
    api_body_timeout_s=BOUND_S,
    api_max_connections=4096,
    rate_limit_per_user=0,
)


@dataclass
class SlowClient:
    """One raw connection that sends part of a request (or nothing), then waits."""

    kind: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    last_sent: float = 0.0  # monotonic: when the part it sends was sent (or the connection made)
    closed_at: float | None = None
    answer: bytes = b""

    def status(self) -> int | None:
        line = self.answer.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 else None

    def body(self) -> dict[str, object]:
        doc: dict[str, object] = orjson.loads(self.answer.split(b"\r\n\r\n", 1)[1])
        return doc


def press_head(coupon_id: str, extra: str = "") -> bytes:
    return (
        f"POST /api/coupons/{coupon_id}/issue/queue HTTP/1.1\r\nhost: api\r\n"
        f"content-type: application/json\r\n{extra}"
    ).encode()


def partial_body_press(coupon_id: str, user: str) -> bytes:
    """A full head declaring 64 bytes, then a body that would be a plain press if cut there."""
    body = orjson.dumps({"userId": user})
    return press_head(coupon_id, "content-length: 64\r\n\r\n") + body


async def open_slow(port: int, kind: str, coupon_id: str, n: int) -> SlowClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = SlowClient(kind, reader, writer, last_sent=time.monotonic())
    if kind in (HEAD, TRICKLE):
        writer.write(press_head(coupon_id)[:40] if kind == TRICKLE else press_head(coupon_id))
    elif kind == BODY:
        writer.write(partial_body_press(coupon_id, f"slow-{n}"))
    if kind != SILENT:
        await writer.drain()
    if kind != TRICKLE:  # a trickling head is bounded from the connection's opening, not its bytes
        client.last_sent = time.monotonic()
    return client


async def trickle(client: SlowClient, head: bytes) -> None:
    """Keep the head coming, one byte every 0.2 s (progress must not extend the deadline)."""
    for i in range(40, len(head)):
        if client.closed_at is not None:
            return
        try:
            client.writer.write(head[i : i + 1])
            await client.writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(0.2)


async def until_closed(client: SlowClient, timeout: float) -> None:
    """Read what the server sends until it closes the connection (or ``timeout`` passes)."""
    try:
        client.answer = await asyncio.wait_for(client.reader.read(), timeout)
    except ConnectionError:
        client.answer = b""
    except TimeoutError:
        return
    client.closed_at = time.monotonic()


@dataclass
class Probe:
    started: float
    seconds: float
    status: int


async def probe_until(stack: Stack, coupon_id: str, done: asyncio.Event) -> list[Probe]:
    """A well-behaved client: a press and a /healthz in turn until ``done``."""
    probes: list[Probe] = []
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        i = 0
        while not done.is_set():
            for call in (
                http.post(f"/api/coupons/{coupon_id}/issue/queue", json={"userId": f"fast-{i}"}),
                http.get("/healthz"),
            ):
                started = time.monotonic()
                r = await call
                probes.append(Probe(started, time.monotonic() - started, r.status_code))
            i += 1
    return probes


async def test_slow_requests_are_closed_within_the_bound_while_others_stay_fast(
    flooded: Stack,
) -> None:
    coupon_id = await flooded.create_coupon(100_000)
    port = flooded.settings.api_port
    done = asyncio.Event()
    probing = asyncio.create_task(probe_until(flooded, coupon_id, done))
    connects = asyncio.Semaphore(200)

    async def one(kind: str, n: int) -> SlowClient:
        async with connects:
            return await open_slow(port, kind, coupon_id, n)

    try:
        clients = await asyncio.gather(
            *(one(kind, n) for kind, count in FLOOD.items() for n in range(count))
        )
        all_held = time.monotonic()
        trickling = [
            asyncio.create_task(trickle(c, press_head(coupon_id)))
            for c in clients
            if c.kind == TRICKLE
        ]
        await asyncio.gather(*(until_closed(c, BOUND_S + CLOSE_SLACK_S + 5) for c in clients))
        for t in trickling:
            t.cancel()
    finally:
        done.set()
        probes = await probing
    for c in clients:
        c.writer.close()

    still_open = [c.kind for c in clients if c.closed_at is None]
    assert not still_open, f"{len(still_open)} slow connections still open: {set(still_open)}"
    first_close = min(c.closed_at or 0 for c in clients)
    assert all_held < first_close, "the flood was never held whole: raise BOUND_S"
    for c in clients:
        assert c.closed_at is not None
        held = c.closed_at - c.last_sent
        assert BOUND_S * 0.9 <= held <= BOUND_S + CLOSE_SLACK_S, (c.kind, held)
        if c.kind == SILENT:
            assert c.answer == b"", c.answer  # it asked nothing: closed as keep-alive expiry is
        else:
            assert c.status() == 408, (c.kind, c.answer[:200])
            assert c.body()["reason"] == "REQUEST_TIMEOUT"
            assert b"connection: close" in c.answer.lower()

    during = [p for p in probes if all_held <= p.started < first_close]
    assert len(during) >= 4, f"only {len(during)} probes ran while the flood was held"
    assert {p.status for p in probes} <= {200, 202}, [p.status for p in probes]
    slowest = max(p.seconds for p in probes)
    assert slowest < FAST_S, f"a probe took {slowest:.2f} s during the flood"

    # A cut-off body is never taken as a press, though its first bytes were a plain one.
    assert flooded.http is not None
    for n in range(0, FLOOD[BODY], 50):
        r = await flooded.http.get(f"/api/coupons/{coupon_id}/issues/slow-{n}")
        assert r.status_code == 404, (n, r.text)
    refused = await flooded.api_metrics()
    head = refused.get('coupon_api_refused_requests_total{reason="head_timeout"}', 0)
    body = refused.get('coupon_api_refused_requests_total{reason="body_timeout"}', 0)
    assert head >= FLOOD[SILENT] + FLOOD[HEAD] + FLOOD[TRICKLE] and body >= FLOOD[BODY]


async def test_a_kept_alive_connection_gets_the_bound_again_for_each_request(
    flooded: Stack,
) -> None:
    """The head deadline of a later request counts from its own first byte, not the first's."""
    reader, writer = await asyncio.open_connection("127.0.0.1", flooded.settings.api_port)
    try:
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: api\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert await asyncio.wait_for(reader.readexactly(2), 10) == b"ok"
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # the third: its head never completes
        await writer.drain()
        sent = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), BOUND_S + CLOSE_SLACK_S)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - sent >= BOUND_S * 0.9
    finally:
        writer.close()


async def test_requests_beyond_the_connection_cap_are_answered_503_busy(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    cap = 40
    settings = isolated_settings(
        kafka_bootstrap, api_max_connections=cap, api_head_timeout_s=120, api_body_timeout_s=120
    )
    stack = await Stack(settings, tmp_path).start(consumers=0)
    held: list[asyncio.StreamWriter] = []
    try:
        coupon_id = await stack.create_coupon(100)
        for _ in range(cap):  # connections that began a request and stalled: all count
            _, writer = await asyncio.open_connection("127.0.0.1", settings.api_port)
            writer.write(press_head(coupon_id))
            await writer.drain()
            held.append(writer)

        async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as fresh:
            for r in (
                await fresh.get("/healthz"),
                await fresh.post(
                    f"/api/coupons/{coupon_id}/issue/queue", json={"userId": "over-the-cap"}
                ),
            ):
                assert r.status_code == 503, r.text
                assert r.json()["reason"] == "BUSY"
                assert r.headers["retry-after"] == "1" and r.headers["connection"] == "close"

            for writer in held:
                writer.close()

            async def served() -> bool:
                return (await fresh.get("/healthz")).status_code == 200

            await wait_until(served, 30, "a request to be served once the connections closed")
            r = await fresh.post(
                f"/api/coupons/{coupon_id}/issue/queue", json={"userId": "under-the-cap"}
            )
            assert r.status_code == 202, r.text
        refused = await stack.api_metrics()
        assert refused['coupon_api_refused_requests_total{reason="connection_limit"}'] >= 2
    finally:
        for writer in held:
            writer.close()
        await stack.stop()
