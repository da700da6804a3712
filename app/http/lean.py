"""The lean `/graphql` path: the common request, one JSON POST of one operation, in one ASGI
callable in front of the application (issue 19).

The full application is Starlette's stack of middleware (debug recording, the server span,
the access log, the security headers, CORS, Starlette's error and exception layers, the
router) around Strawberry's view. For the common request most of it only passes the request
on (the stack and the view's machinery around the execution were two thirds of the CPU of a
`{ __typename }` request: bench/RESULTS.md, "CPU per request: each change"). One callable
does what those layers do for it: it reads the body, checks that it is the plain case, starts
the server span, answers through the same view methods (context, persisted queries, response
cache, execution, the answer's headers and status: `app.http.view`), adds the security
headers, and writes the access line and the request metrics (`AccessLog.record`).

A query in the URL (GET) is taken too when it carries its query text. Anything else goes to
the full application, with the body it has read handed on as if never read: the IDE's page,
a batch, Server-Sent Events, a client accepting multipart answers (@defer), a debug request,
a CORS request, a body without a declared length, a body that is not a well-formed operation
(the full path's refusals and their codes), another media type. Both paths answer alike
(tests/gateway/test_lean.py compares them header by header); LEAN_PATH=false sends every
request through the stack.
"""

from __future__ import annotations

import time
from typing import Any, cast
from urllib.parse import parse_qsl

import orjson
from cross_web import HTTPException
from graphql import ExperimentalIncrementalExecutionResults
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.http import GraphQLRequestData

from app.config.settings import Settings
from app.http.transport import cors_origins, internal_error, log_unexpected, security_headers
from app.http.view import GatewayGraphQL, release_later
from app.telemetry.requests import DEBUG_HEADER, GRAPHQL_PATH, AccessLog, traced
from app.telemetry.tracing import Telemetry

JSON = b"application/json"
# What the request's headers must not carry for the lean path to take it (lower case, as
# ASGI gives header names): the full path has the layers that read them.
FULL_PATH_HEADERS = frozenset({DEBUG_HEADER.encode(), b"transfer-encoding"})
LEAN = "lean_operation"  # the scope state's key for the operation read off the body
OPERATION_KEYS = frozenset({"query", "variables", "operationName", "extensions"})


class _Method:
    """What the view reads off Strawberry's request adapter: the method."""

    __slots__ = ("method",)

    def __init__(self, method: str) -> None:
        self.method = method


POST, GET = _Method("POST"), _Method("GET")
# A query in the URL: the parameters GraphQL over HTTP names, each at most once.
URL_KEYS = frozenset({"query", "variables", "operationName", "extensions"})


class LeanGraphQL:
    def __init__(self, app: ASGIApp, view: GatewayGraphQL, settings: Settings,
                 telemetry: Telemetry) -> None:
        self.app = app  # the full application: everything the lean path does not take
        self.view = view
        self.limit = settings.max_body_bytes
        self.cors = bool(cors_origins(settings))
        self.secured = security_headers(settings.hsts, html=False)
        # The server span as on the full path (OpenTelemetry's middleware when spans are
        # exported, for its HTTP attributes), around the access line.
        self.handle = traced(self._logged, telemetry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != GRAPHQL_PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET":
            await self._get(scope, receive, send)
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        length = self._plain(scope["headers"])
        if length is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client left: the full path says so
                await self.app(scope, _replay(messages, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        operation = _operation(body) if len(body) == length else None
        if operation is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        scope.setdefault("state", {})[LEAN] = (operation, started, POST)
        await self.handle(scope, _replay(messages, receive), send)

    async def _get(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A query in the URL (what Apollo Client sends for persisted queries with
        `useGETForHashedQueries`, and what a CDN can cache): taken when it names its query
        text and the headers are the plain case; the IDE's page, a hash alone (which may
        ask for the IDE) and anything odd go to the full path."""
        started = time.perf_counter()
        operation = None
        if self._plain(scope["headers"], body=False) is not None:
            operation = _url_operation(scope["query_string"])
        if operation is None:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[LEAN] = (operation, started, GET)
        await self.handle(scope, receive, send)

    def _plain(self, headers: list[tuple[bytes, bytes]], body: bool = True) -> int | None:
        """The body's declared length (0 for a request without one) when the headers are
        the plain case, else None."""
        length = None
        json = False
        for name, value in headers:
            if name == b"content-type":
                json = value.split(b";", 1)[0].strip() == JSON
            elif name == b"content-length":
                if length is not None or not value.isdigit() or len(value) > 18:
                    return None
                length = int(value)
            elif name == b"accept":
                if b"event-stream" in value or b"multipart" in value:
                    return None
            elif name in FULL_PATH_HEADERS or (name == b"origin" and self.cors):
                return None
        if not body:
            return None if length is not None else 0
        if not json or length is None or length > self.limit:
            return None
        return length

    async def _logged(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The answer, timed and logged as `AccessLog` does on the full path."""
        _, started, _ = scope["state"][LEAN]
        status = 500
        try:
            status = await self._answer(scope, receive, send)
        finally:
            AccessLog.record(scope, status, time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> int:
        operation, _, method = scope["state"][LEAN]
        view = self.view
        request = Request(scope, receive)
        started = False
        try:
            sub_response = await view.get_sub_response(request)
            try:
                context = await view.get_context(request, sub_response)
                result = await view.execute_single(
                    request, method, sub_response, context, None, GraphQLRequestData(
                        query=operation.get("query"), variables=operation.get("variables"),
                        operation_name=operation.get("operationName"),
                        extensions=operation.get("extensions"), protocol="http"))
                if isinstance(result, ExperimentalIncrementalExecutionResults):
                    # (Only for a client accepting multipart answers, which goes the full way.)
                    raise RuntimeError("an incremental result on the lean path")
                response: Response = view.create_response(
                    await view.process_result(request, result), sub_response)
            except HTTPException as error:
                response = await view.refused(request, error)
            started = True
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [*response.raw_headers, *self.secured]})
            await send({"type": "http.response.body", "body": response.body})
            return response.status_code
        except Exception:
            if started:
                log_unexpected(scope)
                raise
            return await internal_error(scope, send, self.secured)
        finally:
            release_later(scope)


def _operation(body: bytes) -> dict[str, Any] | None:
    """The body as one well-formed operation, else None: the full path refuses it with its
    own code, or takes it (a batch; a trusted document's `documentId`)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not OPERATION_KEYS.issuperset(data):
        return None
    if not isinstance(data.get("query"), str | None) \
            or not isinstance(data.get("variables"), dict | None) \
            or not isinstance(data.get("extensions"), dict | None) \
            or not isinstance(data.get("operationName"), str | None):
        return None
    return cast("dict[str, Any]", data)


def _url_operation(query_string: bytes) -> dict[str, Any] | None:
    """The URL's parameters as one well-formed operation with its query text, else None."""
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return None
    data: dict[str, Any] = dict(pairs)
    if len(data) != len(pairs) or not URL_KEYS.issuperset(data) or not data.get("query") \
            or data.get("operationName") == "":
        return None
    for key in ("variables", "extensions"):
        if key in data:
            try:
                data[key] = orjson.loads(data[key])
            except orjson.JSONDecodeError:
                return None
            if not isinstance(data[key], dict):
                return None
    return data


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """`receive`, giving first the messages already read."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
