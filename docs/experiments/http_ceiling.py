"""The bench's ceiling answer (bench/ceiling_app.py: a constant 202 JSON body) served below ASGI:
an asyncio Protocol on httptools' parser under uvloop, as uvicorn's own protocol parses, but with
no ASGI scope, no task per request and one write per answer. Keep-alive HTTP/1.1 only, no error
handling: a measuring stick for what the HTTP layer of a press costs in uvicorn, not a server.

    .venv/bin/python docs/experiments/http_ceiling.py 18002 &
    wrk -t1 -c64 -d10s -s post.lua http://127.0.0.1:18002/   # post.lua: a POST with a JSON body

and the same wrk against `uvicorn bench.ceiling_app:app --loop uvloop --http httptools`, reading
each server's CPU from /proc/<pid>/stat before and after.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httptools
import uvloop

BODY = b'{"success":true,"message":"queued","queueSize":0}'
ANSWER = (
    b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    % len(BODY)
) + BODY


class ConstantAnswer(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:  # uvloop's, not an asyncio.Transport
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(ANSWER)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ConstantAnswer, "127.0.0.1", port, backlog=2048)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
