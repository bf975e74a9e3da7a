"""The API's HTTP connections: how long a client may take to send a request, and how many
connections one process serves.

uvicorn bounds only the idle time between requests (``timeout_keep_alive``); a client that opens a
connection and sends nothing, or a head without its blank line, or a head and part of a body,
holds its connection (a file descriptor, buffers, a task waiting in ``receive()``) for as long as
it likes. The bounds live here, in uvicorn's httptools protocol, because that is where a request
is read: no ASGI code runs before the head is complete, and a wrapper around ``receive()`` would
neither see a request that never reaches the app nor one whose body the app stopped reading.

A connection has one timer at most, armed only while a request is incomplete after the bytes that
arrived so far were parsed, and on a connection's opening: a request that arrives in one read (a
press, a status read) sets and cancels none, so the hot path costs what it did.

An answer leaves in one write: uvicorn writes a response's head and then its body, and uvloop
sends each at once, so every answer cost two ``write`` system calls, two TCP segments and, for the
client, two reads (on loopback the sender also runs the receiver's TCP path).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
from dataclasses import dataclass
from typing import Any, cast

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.api.errors import failure_payload, refusal
from app.api.messages import DEFAULT_LANG, Lang, language_of, text
from app.observability import metrics

log = logging.getLogger(__name__)

# Where a connection is in reading its current request.
_BETWEEN = 0  # no byte of a request yet (a fresh connection, or after a request was read)
_HEAD = 1  # the request line or headers have begun, the blank line has not come
_BODY = 2  # the head is complete, the body is not
# File descriptors the process needs besides its HTTP connections (pools, broker, logs).
_OTHER_FILES = 256


@dataclass(frozen=True)
class ConnectionLimits:
    """Per process: seconds to receive a request's head and then its body, connections served."""

    head_timeout_s: float
    body_timeout_s: float
    max_connections: int


def bounded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The protocol to give uvicorn as ``http=``: httptools with ``limits`` (picklable, so
    uvicorn's worker processes get it too)."""
    return cast(type[asyncio.Protocol], functools.partial(BoundedHttpProtocol, limits=limits))


def allow_open_files(limits: ConnectionLimits) -> None:
    """Raise this process's open-file limit (soft, up to the hard one) to fit its connections:
    past it ``accept()`` fails with EMFILE and the listener stalls instead of answering 503."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + _OTHER_FILES
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if hard != resource.RLIM_INFINITY and hard < limits.max_connections + _OTHER_FILES:
        log.warning(
            "open-file limit %d is below COUPON_API_MAX_CONNECTIONS (%d) + %d: connections past"
            " it wait in the listen backlog",
            hard,
            limits.max_connections,
            _OTHER_FILES,
        )


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request and a connection cap.

    - head: a connection that opens and completes no request head within ``head_timeout_s`` is
      closed (silently if it sent nothing, as keep-alive expiry does; else ``408``); on a kept-alive
      connection the time counts from the next request's first byte;
    - body: a body not complete ``body_timeout_s`` after its head is answered ``408`` and the
      connection closed (the app's ``receive()`` reports a disconnect and its answer is dropped);
      if the app has already answered, the connection is just closed;
    - cap: a request read while the process holds more than ``max_connections`` connections is
      answered ``503 BUSY`` with ``Retry-After: 1`` and its connection closed.

    Time the server itself stops reading (a pipelined request waiting for the one before it, a
    body buffered past uvicorn's high-water mark) does not count against the client.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._max_connections = limits.max_connections  # read on every request: one lookup
        self._phase = _BETWEEN
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._answers = OneWritePerAnswer(self.transport, self.loop)
        self._timer = self.loop.call_later(self.limits.head_timeout_s, self._read_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._phase != _BETWEEN and self._timer is None and not self.transport.is_closing():
            self._arm()

    def on_message_begin(self) -> None:
        self._phase = _HEAD
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        if self._timer is not None:
            self._cancel_timer()
        if len(self.connections) > self._max_connections:
            # uvicorn's own limit_concurrency would answer in plain text; ours is the API's shape
            served, self.app = self.app, _over_the_cap
            try:
                super().on_headers_complete()
            finally:
                self.app = served
        else:
            super().on_headers_complete()
        if self.cycle is not None:  # None for an upgrade request
            self.cycle.transport = self._answers  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._phase = _BETWEEN
        if self._timer is not None:
            self._cancel_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._phase != _BETWEEN and self._timer is not None:
            # a pipelined request waited for this answer, unread: its bound starts again now
            self._cancel_timer()
            self._arm()

    def _arm(self) -> None:
        bound = self.limits.head_timeout_s if self._phase == _HEAD else self.limits.body_timeout_s
        self._timer = self.loop.call_later(bound, self._read_timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _read_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # we stopped reading, not the client: give it the time again
            self._arm()
            return
        if self._phase == _BETWEEN:  # opened and sent nothing
            metrics.API_REFUSED_REQUESTS.labels("head_timeout").inc()
            self.transport.close()
            return
        if self._phase == _HEAD:
            metrics.API_REFUSED_REQUESTS.labels("head_timeout").inc()
            self._answer_408()
            return
        metrics.API_REFUSED_REQUESTS.labels("body_timeout").inc()
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            # the app answered without the whole body (413, 415, ...): that answer stands
            if cycle.response_complete:
                self.transport.close()
            else:
                cycle.keep_alive = False
            return
        if cycle is not None:
            cycle.disconnected = True  # the app's receive() says so; what it sends is dropped
            cycle.message_event.set()
        self._answer_408()

    def _answer_408(self) -> None:
        lang = DEFAULT_LANG
        if self._phase == _BODY:
            lang = language_of(self.headers)
        body = _request_timeout_body(lang)
        head = [STATUS_LINE[408]]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()


class OneWritePerAnswer:
    """What a request's cycle writes through: a write is held until the next one (a response's
    head until its body: Starlette sends both in one go) and the two leave in one system call.

    A write with nothing after it (the head of a streamed body, ``100 Continue``) leaves on the
    loop's next iteration; closing sends what is held first."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.write(held + data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._transport.close()


@functools.lru_cache(maxsize=8)
def _request_timeout_body(lang: Lang) -> bytes:
    return failure_payload("REQUEST_TIMEOUT", text("REQUEST_TIMEOUT", lang))


async def _over_the_cap(scope: Scope, receive: Receive, send: Send) -> None:
    metrics.API_REFUSED_REQUESTS.labels("connection_limit").inc()
    response = refusal(503, "BUSY", language_of(scope["headers"]))
    response.headers["Retry-After"] = "1"
    response.headers["Connection"] = "close"
    await response(scope, receive, send)
