"""The ceiling: an ASGI app that answers every request with a constant 202 JSON body, served by
the same server stack as the API (uvicorn, httptools, uvloop, one worker). What the API serves is
measured against what this serves on the same machine in the same run."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

_BODY = b'{"success":true,"message":"queued","queueSize":0}'
_START = {
    "type": "http.response.start",
    "status": 202,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_BODY))],
}
_RESPONSE = {"type": "http.response.body", "body": _BODY}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":  # lifespan: nothing to set up
        message = await receive()
        while message["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # read the body, as the API does
        more = (await receive()).get("more_body", False)
    await send(_START)
    await send(_RESPONSE)
