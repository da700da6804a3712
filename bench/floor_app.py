"""The floor under the gateway's `{ __typename }`: uvicorn with the gateway's HTTP stack
(httptools, uvloop, no access log) and an ASGI app that reads the body and answers the same
bytes, with no GraphQL, middleware, logging or metrics. `python -m bench.speed --floor`
measures it beside the gateway: what no change to the gateway's own code can go under."""

from __future__ import annotations

from typing import Any

BODY = b'{"data":{"__typename":"Query"}}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
