"""Which requests the lean path takes (app/http/lean.py), driven in-process through the real
application: the plain JSON POST of one operation is answered by it without the Starlette
stack; everything else reaches the stack with its body intact. (That both answer alike is
tests/gateway/test_lean.py.)"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.types import Receive, Scope, Send

from app.config.settings import Settings
from app.http.app import create_app
from app.http.lean import LeanGraphQL

TYPENAME = orjson.dumps({"query": "{ __typename }"})


class Recorder:
    """The full application, counting what reaches it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.bodies.append(b"")

            async def recorded() -> Any:
                message = await receive()
                self.bodies[-1] += message.get("body", b"")
                return message

            await self.app(scope, recorded, send)
            return
        await self.app(scope, receive, send)


async def call(app: Any, method: str, body: bytes, headers: list[tuple[bytes, bytes]],
               chunks: int = 1, query_string: bytes = b"") -> tuple[int, bytes]:
    """One request through the ASGI app; the body in `chunks` messages."""
    size = max(1, -(-len(body) // chunks))
    parts = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
                for i, p in enumerate(parts)]
    out: list[Any] = []

    async def receive() -> Any:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        out.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": "/graphql",
             "raw_path": b"/graphql", "query_string": query_string, "root_path": "",
             "headers": [(b"host", b"gw"), *headers], "client": ("127.0.0.1", 4000),
             "server": ("127.0.0.1", 8000), "state": {}}
    await app(scope, receive, send)
    return out[0]["status"], b"".join(m.get("body", b"") for m in out[1:])


def json_headers(body: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()), *extra]


@pytest.fixture
def lean() -> LeanGraphQL:
    app = create_app(Settings.from_env({"DEV_MODE": "true", "CACHE_ENABLED": "false",
                                        "RATE_LIMIT_ENABLED": "false"}))
    assert isinstance(app, LeanGraphQL)
    app.app = Recorder(app.app)
    return app


async def test_the_plain_request_never_reaches_the_stack(lean: LeanGraphQL) -> None:
    for chunks in (1, 3):  # (a body may come in several messages)
        status, body = await call(lean, "POST", TYPENAME, json_headers(TYPENAME),
                                  chunks=chunks)
        assert (status, orjson.loads(body)) == (200, {"data": {"__typename": "Query"}})
    status, _ = await call(lean, "POST", TYPENAME, json_headers(
        TYPENAME, (b"content-type", b"application/json; charset=utf-8")))
    assert status == 200
    # A persisted query's hash without its text (what Apollo's clients send first), and no
    # query at all: refused by the view, as on the full path.
    documents: list[dict[str, Any]] = [
        {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}},
        {"extensions": {}}]
    for document in documents:
        raw = orjson.dumps(document)
        status, body = await call(lean, "POST", raw, json_headers(raw))
        assert status in (200, 400), body
    # A query in the URL.
    status, body = await call(lean, "GET", b"", [(b"accept", b"*/*")],
                              query_string=b"query=%7B__typename%7D")
    assert (status, orjson.loads(body)) == (200, {"data": {"__typename": "Query"}})
    assert isinstance(lean.app, Recorder) and lean.app.bodies == []


@pytest.mark.parametrize(("what", "method", "body", "headers"), [
    ("a batch", "POST", b'[{"query": "{ __typename }"}]', None),
    ("bad JSON", "POST", b"{ nope", None),
    ("a query that is not a string", "POST", b'{"query": 5}', None),
    ("a trusted document id", "POST", b'{"documentId": "sha256:00"}', None),
    ("the IDE's page", "GET", b"", [(b"accept", b"text/html")]),
    ("another media type", "POST", TYPENAME,
     [(b"content-type", b"text/plain"), (b"content-length", b"26")]),
    ("no declared length", "POST", TYPENAME, [(b"content-type", b"application/json")]),
    ("a body longer than declared", "POST", TYPENAME,
     [(b"content-type", b"application/json"), (b"content-length", b"10")]),
    ("a debug request", "POST", TYPENAME, json_headers(TYPENAME, (b"x-gateway-debug", b"1"))),
    ("event stream", "POST", TYPENAME, json_headers(TYPENAME,
                                                    (b"accept", b"text/event-stream"))),
    ("multipart answers", "POST", TYPENAME, json_headers(
        TYPENAME, (b"accept", b"multipart/mixed; incrementalSpec=v0.2"))),
])
async def test_everything_else_reaches_the_stack_with_its_body(
        lean: LeanGraphQL, what: str, method: str, body: bytes,
        headers: list[tuple[bytes, bytes]] | None) -> None:
    await call(lean, method, body, json_headers(body) if headers is None else headers)
    assert isinstance(lean.app, Recorder)
    assert len(lean.app.bodies) == 1, what
    if headers is None:  # the lean path read the body to decide: the stack gets all of it
        assert lean.app.bodies == [body], what
