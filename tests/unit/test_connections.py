"""The API's HTTP protocol (app/api/connections.py) on a stand-in transport: which requests get a
timer, what a slow one is answered, and that the server's own pauses are not held against it.
The real process under a flood of slow clients is tests/integration/test_slow_clients.py."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn import Config
from uvicorn.server import ServerState

from app.api.connections import BoundedHttpProtocol, ConnectionLimits
from harness import wait_until

BOUND = 0.05
PRESS = (
    b"POST /api/coupons/0b5cfa36-4f52-4a1e-9d8e-3c1b6b2b8f7e/issue/queue HTTP/1.1\r\n"
    b"host: api\r\ncontent-type: application/json\r\ncontent-length: 19\r\n\r\n"
    b'{"userId": "alice"}'
)


class Transport(asyncio.Transport):
    """Records what the protocol writes and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.writes += 1

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


HELD = asyncio.Event()  # what a request for /hold waits for before it is answered


async def ok(scope: Any, receive: Any, send: Any) -> None:
    if scope["path"] == "/hold":
        await HELD.wait()
    if scope["path"] == "/stream":  # a head, then a body that comes only when released
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await HELD.wait()
        await send({"type": "http.response.body", "body": b"streamed"})
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def connect(
    max_connections: int = 100, bound: float = BOUND
) -> tuple[BoundedHttpProtocol, Transport]:
    config = Config(app=ok, lifespan="off", log_config=None, ws="none")
    limits = ConnectionLimits(bound, bound, max_connections)
    protocol = BoundedHttpProtocol(
        config=config, server_state=ServerState(), app_state={}, limits=limits
    )
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def test_a_request_that_arrives_in_one_read_arms_no_timer() -> None:
    protocol, transport = connect()
    protocol.data_received(PRESS)
    assert protocol._timer is None  # the connection's opening timer was cancelled, none set
    await wait_until(lambda: transport.written.endswith(b"ok"), 5, "the answer")
    protocol.data_received(PRESS)  # again, kept alive
    assert protocol._timer is None and not transport.closed


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    _, transport = connect()
    await wait_until(lambda: transport.closed, 5, "the silent connection to be closed")
    assert transport.written == b""


async def test_a_partial_head_is_answered_408_and_closed() -> None:
    protocol, transport = connect()
    protocol.data_received(PRESS[:60])
    await wait_until(lambda: transport.closed, 5, "the partial head to be cut off")
    assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close\r\n" in transport.written
    body = orjson.loads(transport.written.split(b"\r\n\r\n", 1)[1])
    assert body == {
        "success": False,
        "reason": "REQUEST_TIMEOUT",
        "message": "The request did not arrive in time; the connection is closed.",
    }


async def test_a_partial_body_is_answered_408_and_the_app_sees_a_disconnect() -> None:
    protocol, transport = connect()
    protocol.data_received(PRESS[:-5].replace(b"\r\nhost", b"\r\naccept-language: ko\r\nhost"))
    await wait_until(lambda: transport.closed, 5, "the partial body to be cut off")
    assert transport.written.startswith(b"HTTP/1.1 408 ")
    assert "제시간" in orjson.loads(transport.written.split(b"\r\n\r\n", 1)[1])["message"]
    assert protocol.cycle.disconnected  # the app's receive() says so, its answer is dropped


async def test_time_the_server_stops_reading_is_not_held_against_the_client() -> None:
    protocol, transport = connect(bound=0.3)
    # a pipelined press behind a request still being answered: uvicorn stops reading meanwhile
    protocol.data_received(b"GET /hold HTTP/1.1\r\nhost: api\r\n\r\n" + PRESS[:-5])
    assert protocol.flow.read_paused
    armed = protocol._timer

    def rearmed() -> bool:
        return protocol._timer is not None and protocol._timer is not armed

    await wait_until(rearmed, 5, "the body's bound to pass and be given again", interval=0.01)
    assert not transport.closed and transport.written == b""
    HELD.set()  # the first is answered: reading resumes, the pipelined press has its bound anew
    answered = await wait_until(
        lambda: transport.written.endswith(b"ok") and protocol._timer, 5, "the first answer", 0.01
    )
    assert isinstance(answered, asyncio.TimerHandle)  # the timer wait_until saw set
    assert answered.when() - asyncio.get_running_loop().time() > 0.2
    protocol.data_received(PRESS[-5:])
    await wait_until(lambda: transport.written.count(b"ok") == 2, 5, "the pipelined answer")
    assert not transport.closed and protocol._timer is None


async def test_a_request_beyond_the_cap_is_answered_503_busy() -> None:
    first, _ = connect(max_connections=1)
    second, transport = connect(max_connections=1)
    second.connections.add(first)  # both share one server's connections, as in uvicorn
    second.data_received(PRESS)
    await wait_until(lambda: transport.closed, 5, "the connection over the cap to be closed")
    head, body = bytes(transport.written).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in head.lower()
    assert orjson.loads(body)["reason"] == "BUSY"


async def test_an_answer_leaves_in_one_write_its_head_and_body_together() -> None:
    protocol, transport = connect()
    for n in (1, 2):  # and again on the kept-alive connection
        protocol.data_received(PRESS)
        await wait_until(lambda: transport.written.count(b"ok") == n, 5, "the answer")  # noqa: B023
        assert transport.writes == n
    head, body = bytes(transport.written).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and body.startswith(b"ok")


async def test_a_head_whose_body_waits_is_sent_without_waiting_for_it() -> None:
    HELD.clear()
    protocol, transport = connect()
    protocol.data_received(b"GET /stream HTTP/1.1\r\nhost: api\r\n\r\n")
    await wait_until(lambda: transport.written.startswith(b"HTTP/1.1 200 OK"), 5, "the head")
    assert b"streamed" not in transport.written
    HELD.set()
    await wait_until(lambda: transport.written.endswith(b"0\r\n\r\n"), 5, "the streamed body")
    assert b"streamed" in transport.written and not transport.closed
