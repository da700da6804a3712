"""The transports of subscriptions, both at /graphql: graphql-transport-ws (a WebSocket with
that subprotocol) and GraphQL over Server-Sent Events in its distinct connections mode (a
POST, or a GET, with `Accept: text/event-stream`). What a subscription is and how events
reach it is `app/execution/subscriptions.py`; here is what the protocols add:

- who the caller is: the `connection_init` payload's `Authorization` (any case; in
  DEV_MODE `X-User-Id` too), else the WebSocket request's own headers; the SSE request's
  headers. A connection ends when its token expires: WebSocket close 4403, SSE an
  UNAUTHENTICATED error event and the end of the stream;
- limits: subscriptions per WebSocket connection, connections per client and in all
  (MAX_SUBSCRIPTION_CONNECTIONS, per process, apart from MAX_CONNECTIONS), the
  connection_init timeout (4408), and the bytes waiting for a connection: a consumer
  that falls `SUBSCRIPTION_BUFFER_BYTES` behind is dropped (WebSocket close 1013, SSE the
  stream ends), so that a slow client costs a bounded amount of memory;
- keep-alives (a ping, an SSE comment) on idle connections, and pong for every ping;
- shutdown: every connection ends in a way the client libraries retry (WebSocket close
  1001 without `complete`, so graphql-ws subscribes again; SSE the stream ends without
  `complete`, so graphql-sse reconnects).

Every message of a connection goes through its `Outbox`, one writer at a time. A query or a
mutation over SSE is answered as `next` events: one, or the parts of an operation with
@defer or @stream (app/http/incremental.py); over the WebSocket it is answered whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson
import strawberry
from graphql import ExperimentalIncrementalExecutionResults
from starlette.datastructures import Headers, QueryParams
from starlette.types import Receive, Scope, Send

from app.config.settings import Settings
from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.errors import HTTPRefusal
from app.core.observer import NULL_OBSERVER, Observer
from app.execution.subscriptions import (
    Hub,
    NotSubscription,
    OperationRequest,
    Payload,
    Subscription,
)
from app.http.connections import SUBSCRIPTIONS
from app.http.framing import SSE_COMPLETE, SSE_HEADERS, SSE_KEEPALIVE, sse_next
from app.http.incremental import discard, first_payload, later_payloads
from app.security.auth import ANONYMOUS, USER_HEADER, Authenticator, Viewer
from app.security.ratelimit import client_of

log = logging.getLogger("gateway.subscriptions")
WS_PROTOCOL = "graphql-transport-ws"
EVENT_STREAM = "text/event-stream"
# Close codes: graphql-transport-ws's own, and the WebSocket standard's (RFC 6455) where the
# protocol has none. The graphql-ws client retries 1001 and 1013, 4403 and 4408; it gives
# up at once on 4400, 4401, 4406, 4409, 4429 and 4500 (a client bug or an internal error).
BAD_REQUEST = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
SUBPROTOCOL_NOT_ACCEPTABLE = 4406
INIT_TIMEOUT = 4408
SUBSCRIBER_EXISTS = 4409
TOO_MANY_INITS = 4429
GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013
CLOSE_WAIT_S = 5.0  # the longest wait to send a close frame to a client that does not read
SHUTDOWN_WAIT_S = 5.0  # at shutdown, the longest wait for connections to send what is queued


class Outbox:
    """A connection's messages waiting to be sent, bounded in bytes. One message is always
    accepted into an empty outbox (a message is bounded by the query limits)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[tuple[str, bytes]] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()

    def put(self, kind: str, data: bytes) -> bool:
        """Queue `data` (a message of `kind`: next, error, complete, or protocol); False
        when it would pass the limit (nothing is queued)."""
        if self._items and self._bytes + len(data) > self.limit:
            return False
        self._items.append((kind, data))
        self._bytes += len(data)
        self._ready.set()
        return True

    async def get(self) -> tuple[str, bytes]:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        kind, data = self._items.popleft()
        self._bytes -= len(data)
        return kind, data

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


def _operation_request(body: Any) -> OperationRequest | None:
    """A GraphQL request of the right shape, else None."""
    if not isinstance(body, dict):
        return None
    query, variables = body.get("query"), body.get("variables")
    name, extensions = body.get("operationName"), body.get("extensions")
    if not (isinstance(query, str | None) and isinstance(variables, dict | None)
            and isinstance(name, str | None) and isinstance(extensions, dict | None)):
        return None
    if query is None and extensions is None:
        return None
    return OperationRequest(query, variables, name, extensions)


class Connection:
    """What both transports share: the caller, the subscriptions, the outbox and its writer,
    the timers, and how the connection ends."""

    protocol = ""

    def __init__(self, streams: Streams, address: str) -> None:
        self.streams = streams
        self.hub = streams.hub
        self.settings = streams.settings
        self.observer = streams.observer
        self.clock = streams.clock
        self.address = address
        self.viewer: Viewer = ANONYMOUS
        self.client_key: str | None = None
        self.outbox = Outbox(self.settings.subscription_buffer_bytes)
        self.subscriptions: dict[str, Subscription] = {}
        self.done = asyncio.Event()
        self.flush = False  # when done: send what is queued first
        self.close: tuple[int, str] | None = None  # the close to send (WebSocket)
        self.disconnected = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._writing: asyncio.Task[None] | None = None

    # -- the hub's side (Sink) --------------------------------------------------------------
    def offer(self, subscription: Subscription, payload: Payload) -> None:
        if self.done.is_set():
            return
        if not self.outbox.put("next", self.encode_next(subscription.id, payload)):
            waiting = self.outbox.bytes
            self.outbox.clear()  # dropped: what it holds goes now, not when it is closed
            self.end("slow_consumer", (TRY_AGAIN_LATER,
                                       f"Too slow: {waiting} bytes of messages waiting"))

    def encode_next(self, subscription_id: str, payload: Payload) -> bytes:
        raise NotImplementedError

    # -- ending -------------------------------------------------------------------------------
    def end(self, reason: str | None, close: tuple[int, str] | None = None, *,
            flush: bool = False) -> None:
        """End the connection (once): `reason` for the metric (None: the client left),
        `close` the WebSocket close to send, `flush` to send what is queued first."""
        if self.done.is_set():
            return
        if reason is not None:
            self.observer.subscription_connection_closed(self.protocol, reason)
        self.close = close
        self.flush = flush
        for subscription in self.subscriptions.values():
            self.hub.unsubscribe(subscription)
        self.done.set()

    def start(self, coroutine: Any) -> None:
        self._tasks.append(asyncio.create_task(coroutine))

    def start_writer(self, write: Any) -> None:
        self._writing = asyncio.create_task(self._writer(write))
        self._tasks.append(self._writing)

    async def _writer(self, write: Any) -> None:
        """Send the outbox's messages one at a time; once the connection is ending with
        `flush`, end when the outbox is empty."""
        try:
            while True:
                kind, data = await self.outbox.get()
                await write(data)
                if kind != "protocol":
                    self.observer.subscription_message(self.protocol, kind)
                if self.done.is_set() and not self.outbox:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # the client is gone (the server's send raises)
            self.disconnected = True
            self.end(None)

    async def _expiry(self) -> None:
        until = self.viewer.valid_until
        if until is None:
            return
        await self.clock.sleep(max(0.0, until - self.clock.time()))
        self.expired()

    def expired(self) -> None:
        raise NotImplementedError

    async def _keepalive(self, message: bytes) -> None:
        interval = self.settings.subscription_keepalive_s
        if interval <= 0:
            return
        while True:
            await self.clock.sleep(interval)
            if not self.outbox:
                self.outbox.put("protocol", message)

    async def _finish(self) -> None:
        """Once done: send what is to be flushed (within a bound), stop the tasks, release
        everything the connection held."""
        writer = self._writing
        if self.flush and writer is not None and not writer.done() and self.outbox:
            with contextlib.suppress(Exception):
                await self.clock.wait_for(asyncio.shield(writer), SHUTDOWN_WAIT_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.outbox.clear()
        for subscription in self.subscriptions.values():
            self.hub.unsubscribe(subscription)
        self.subscriptions.clear()
        self.streams.release(self)


class WebSocketConnection(Connection):
    """graphql-transport-ws (https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md)."""

    protocol = "ws"

    def __init__(self, streams: Streams, address: str, headers: Headers) -> None:
        super().__init__(streams, address)
        self.headers = headers
        self.init_received = False
        self.acknowledged = False
        self.pending: dict[str, asyncio.Task[None]] = {}  # subscribes still being checked

    def encode_next(self, subscription_id: str, payload: Payload) -> bytes:
        return orjson.dumps({"id": subscription_id, "type": "next", "payload": payload})

    def queue(self, kind: str, message: dict[str, Any]) -> None:
        if not self.outbox.put(kind, orjson.dumps(message)):
            self.outbox.clear()
            self.end("slow_consumer", (TRY_AGAIN_LATER, "Too slow: messages waiting"))

    def fail(self, code: int, reason: str, label: str = "bad_request") -> None:
        self.end(label, (code, reason))

    def expired(self) -> None:
        self.fail(FORBIDDEN, "Forbidden: the bearer token has expired", "token_expired")

    async def run(self, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if WS_PROTOCOL not in self.headers.get("sec-websocket-protocol", "").replace(
                " ", "").split(","):
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": SUBPROTOCOL_NOT_ACCEPTABLE,
                        "reason": "Subprotocol not acceptable"})
            return
        await send({"type": "websocket.accept", "subprotocol": WS_PROTOCOL})
        if self.streams.closing:
            self.fail(GOING_AWAY, "The gateway is shutting down: connect again", "shutdown")
        elif len(self.streams.connections) > self.settings.max_subscription_connections:
            self.fail(TRY_AGAIN_LATER, "The gateway holds as many subscription connections "
                      "as it may: connect again shortly", "over_capacity")
        else:
            self.start_writer(
                lambda data: send({"type": "websocket.send", "text": data.decode()}))
            self.start(self._reader(receive))
            self.start(self._init_timeout())
            self.start(self._keepalive(orjson.dumps({"type": "ping"})))
            await self.done.wait()
        for task in self.pending.values():
            task.cancel()
        await self._finish()
        if self.close is not None and not self.disconnected:
            code, reason = self.close
            with contextlib.suppress(Exception):
                # A client that does not read holds the close frame back (the server waits
                # until its buffer drains): not for long. Then the connection just ends.
                await self.clock.wait_for(
                    send({"type": "websocket.close", "code": code, "reason": reason}),
                    CLOSE_WAIT_S)

    async def _reader(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.disconnected = True
                self.end(None)
                return
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            self._handle(data)

    async def _init_timeout(self) -> None:
        await self.clock.sleep(self.settings.subscription_init_timeout_s)
        if not self.init_received:
            self.fail(INIT_TIMEOUT, "Connection initialisation timeout", "init_timeout")

    def _handle(self, data: str | bytes) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        if not isinstance(kind, str) or not isinstance(message, dict):
            self.fail(BAD_REQUEST, "Invalid message received")
            return
        if kind == "connection_init":
            if self.init_received:
                self.fail(TOO_MANY_INITS, "Too many initialisation requests")
                return
            self.init_received = True
            self.start(self._init(message.get("payload")))
        elif kind == "ping":
            self.queue("protocol", {"type": "pong"})
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            self._subscribe(message)
        elif kind == "complete":
            subscription_id = message.get("id")
            if not isinstance(subscription_id, str):
                self.fail(BAD_REQUEST, "Invalid message received")
                return
            pending = self.pending.pop(subscription_id, None)
            if pending is not None:
                pending.cancel()
            subscription = self.subscriptions.pop(subscription_id, None)
            if subscription is not None:
                self.hub.unsubscribe(subscription)
        else:
            self.fail(BAD_REQUEST, f"Unexpected message of type {kind[:40]} received")

    async def _init(self, payload: Any) -> None:
        try:
            if isinstance(payload, dict) and any(
                    str(k).lower() in ("authorization", USER_HEADER) for k in payload):
                viewer = await self.streams.auth.viewer_of_params(payload)
            elif payload is None or isinstance(payload, dict):
                viewer = await self.streams.auth.viewer(self.headers)
            else:
                raise HTTPRefusal(400, "The connection_init payload must be an object",
                                  "BAD_REQUEST")
        except HTTPRefusal as refusal:
            if refusal.status_code == 503:
                self.fail(TRY_AGAIN_LATER, refusal.reason[:120], "unauthenticated")
            else:
                self.fail(FORBIDDEN, f"Forbidden: {refusal.reason}"[:120], "unauthenticated")
            return
        if not self.streams.admit(self, viewer):
            self.fail(TRY_AGAIN_LATER, "Too many connections for this client",
                      "too_many_connections")
            return
        self.viewer = viewer
        self.acknowledged = True
        self.queue("protocol", {"type": "connection_ack"})
        self.start(self._expiry())

    def _subscribe(self, message: dict[str, Any]) -> None:
        if not self.acknowledged:
            self.fail(UNAUTHORIZED, "Unauthorized")
            return
        subscription_id = message.get("id")
        request = _operation_request(message.get("payload"))
        if not isinstance(subscription_id, str) or not subscription_id or request is None:
            self.fail(BAD_REQUEST, "Invalid message received")
            return
        if subscription_id in self.subscriptions or subscription_id in self.pending:
            self.fail(SUBSCRIBER_EXISTS, f"Subscriber for {subscription_id[:60]} already exists")
            return
        limit = self.settings.subscriptions_per_connection
        if len(self.subscriptions) + len(self.pending) >= limit:
            self.queue("error", {"id": subscription_id, "type": "error", "payload": [{
                "message": f"This connection holds {limit} subscriptions already, the most "
                "it may: complete one first, or open another connection",
                "extensions": {"code": "TOO_MANY_SUBSCRIPTIONS", "limit": limit}}]})
            return
        self.pending[subscription_id] = asyncio.create_task(
            self._start(subscription_id, request))

    async def _start(self, subscription_id: str, request: OperationRequest) -> None:
        try:
            result = await self.hub.subscribe(request, self.viewer, self.address, self, "ws",
                                              subscription_id)
        except Exception:
            log.exception("subscribe failed")
            result = [{"message": "Internal server error",
                       "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]
        if self.pending.pop(subscription_id, None) is None or self.done.is_set():
            # Completed by the client (or the connection ended) meanwhile.
            if isinstance(result, Subscription):
                self.hub.unsubscribe(result)
            return
        if isinstance(result, Subscription):
            self.subscriptions[subscription_id] = result
        elif isinstance(result, NotSubscription):
            payload = await self.streams.run_operation(request, result.query, self.viewer,
                                                       self.address)
            self.queue("next", {"id": subscription_id, "type": "next", "payload": payload})
            self.queue("complete", {"id": subscription_id, "type": "complete"})
        else:
            self.queue("error", {"id": subscription_id, "type": "error", "payload": result})


class EventStream(Connection):
    """GraphQL over Server-Sent Events, distinct connections mode
    (https://github.com/enisdenjo/graphql-sse/blob/master/PROTOCOL.md): one operation per
    stream; refusals and errors are `next` events, then `complete`."""

    protocol = "sse"

    def encode_next(self, subscription_id: str, payload: Payload) -> bytes:
        return sse_next(orjson.dumps(payload))

    def expired(self) -> None:
        self.outbox.put("next", self.encode_next("", {"errors": [{
            "message": "The bearer token has expired",
            "extensions": {"code": "UNAUTHENTICATED"}}]}))
        self.end("token_expired", flush=True)

    async def run(self, request: OperationRequest, viewer: Viewer, receive: Receive,
                  send: Send) -> None:
        self.viewer = viewer
        result = await self.hub.subscribe(request, viewer, self.address, self, "sse", "")
        # The RateLimit headers as the subscription's charge (in the hub) left the bucket.
        _, limit = await self.streams.rate_limit(viewer, self.address, 0)
        await send({"type": "http.response.start", "status": 200, "headers": [
            *SSE_HEADERS, *((k.lower().encode(), v.encode()) for k, v in limit.items())]})

        async def write(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        self.start_writer(write)
        self.start(self._disconnect(receive))
        if isinstance(result, Subscription):
            self.subscriptions[""] = result
            self.start(self._keepalive(SSE_KEEPALIVE))
            self.start(self._expiry())
        elif isinstance(result, NotSubscription):
            # A query or mutation: its result, or its parts (@defer, @stream), as `next`
            # events as they come; stopped if the client leaves.
            self.start(self._answer(request, result.query, viewer))
        else:
            self.outbox.put("next", self.encode_next("", {"errors": result}))
            self.outbox.put("complete", SSE_COMPLETE)
            self.end(None, flush=True)
        await self.done.wait()
        await self._finish()
        if not self.disconnected:
            with contextlib.suppress(Exception):
                await self.clock.wait_for(
                    send({"type": "http.response.body", "body": b"", "more_body": False}),
                    CLOSE_WAIT_S)

    async def _answer(self, request: OperationRequest, query: str, viewer: Viewer) -> None:
        async for payload in self.streams.operation_parts(request, query, viewer,
                                                          self.address):
            if not self.outbox.put("next", self.encode_next("", payload)):
                self.outbox.clear()
                self.end("slow_consumer")
                return
        self.outbox.put("complete", SSE_COMPLETE)
        self.end(None, flush=True)

    async def _disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True
        self.end(None)


class Streams:
    """This process's subscription connections, both transports: admission (connections per
    client), queries and mutations sent over them, and shutdown."""

    def __init__(self, hub: Hub, settings: Settings, auth: Authenticator,
                 schema: strawberry.Schema, observer: Observer = NULL_OBSERVER,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.hub = hub
        self.settings = settings
        self.auth = auth
        self.schema = schema
        self.observer = observer
        self.clock = clock
        self.connections: set[Connection] = set()
        self._empty = asyncio.Event()  # set while no connection is open
        self._empty.set()
        self._clients: dict[str, int] = {}
        self.closing = False

    def admit(self, connection: Connection, viewer: Viewer) -> bool:
        """Count `connection` against its client's limit; False when it is over."""
        key = (f"user:{viewer.id}" if viewer.id is not None
               else f"addr:{client_of(connection.address)}")
        if self._clients.get(key, 0) >= self.settings.subscription_connections_per_client:
            return False
        self._clients[key] = self._clients.get(key, 0) + 1
        connection.client_key = key
        return True

    def release(self, connection: Connection) -> None:
        key, connection.client_key = connection.client_key, None
        if key is not None:
            left = self._clients.get(key, 1) - 1
            if left > 0:
                self._clients[key] = left
            else:
                self._clients.pop(key, None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The WebSocket endpoint at /graphql (an ASGI app, for Starlette's route)."""
        client = scope.get("client")
        connection = WebSocketConnection(self, client[0] if client else "unknown",
                                         Headers(scope=scope))
        self._opened(connection)
        try:
            await connection.run(receive, send)
        finally:
            self._closed(connection)

    async def event_stream(self, scope: Scope, receive: Receive, send: Send,
                           body: Any) -> None:
        """An SSE request (POST with its decoded JSON body, or GET: `body` None)."""
        if body is None:
            params = QueryParams(scope.get("query_string", b""))
            try:
                body = {key: (orjson.loads(params[key]) if key in ("variables", "extensions")
                              and params.get(key) else params.get(key))
                        for key in ("query", "variables", "operationName", "extensions")}
            except orjson.JSONDecodeError:
                body = None
        client = scope.get("client")
        address = client[0] if client else "unknown"
        request = _operation_request(body)
        if request is None:
            await self._refuse(send, ANONYMOUS, address, 400, "BAD_REQUEST",
                               "The request must be a GraphQL request: `query` (a string), "
                               "`variables` and `extensions` (objects), `operationName` (a "
                               "string)")
            return
        connection = EventStream(self, address)
        try:
            viewer = await self.auth.viewer(Headers(scope=scope))
        except HTTPRefusal as refusal:
            self.observer.subscription_connection_closed("sse", "unauthenticated")
            await self._refuse(send, ANONYMOUS, address, refusal.status_code, refusal.code,
                               refusal.reason, refusal.headers)
            return
        if self.closing:
            self.observer.subscription_connection_closed("sse", "shutdown")
            await self._refuse(send, viewer, address, 503, "SHUTTING_DOWN",
                               "The gateway is shutting down: connect again",
                               {"Retry-After": "1"})
            return
        if len(self.connections) >= self.settings.max_subscription_connections:
            self.observer.subscription_connection_closed("sse", "over_capacity")
            await _refuse(send, 503, "OVER_CAPACITY", "The gateway holds as many subscription "
                          "connections as it may (MAX_SUBSCRIPTION_CONNECTIONS): retry "
                          "shortly", {"Retry-After": "1"})
            return
        if not self.admit(connection, viewer):
            self.observer.subscription_connection_closed("sse", "too_many_connections")
            await self._refuse(send, viewer, address, 429, "TOO_MANY_CONNECTIONS",
                               "Too many subscription connections for this client (at most "
                               f"{self.settings.subscription_connections_per_client})",
                               {"Retry-After": "1"})
            return
        self._opened(connection)
        try:
            await connection.run(request, viewer, receive, send)
        finally:
            self._closed(connection)
            self.release(connection)

    async def rate_limit(self, viewer: Viewer, address: str, cost: int
                         ) -> tuple[bool, dict[str, str]]:
        """Charge `cost` (0: only look) to the caller; whether it was allowed, and the
        RateLimit headers (none without rate limits)."""
        limiter = self.hub.limiter
        if limiter is None:
            return True, {}
        decision = await (limiter.spend_for(viewer, address, cost) if cost
                          else limiter.peek_for(viewer, address))
        return decision.allowed, decision.headers()

    async def _refuse(self, send: Send, viewer: Viewer, address: str, status: int, code: str,
                      message: str, headers: dict[str, str] | None = None) -> None:
        """An SSE request refused before it streams: like a refusal over plain HTTP, it
        costs 1 and carries the RateLimit headers; a caller over its limit gets 429."""
        allowed, limit = await self.rate_limit(viewer, address, 1)
        if not allowed and status != 429:
            status, code = 429, "RATE_LIMITED"
            message = f"Rate limit exceeded: retry in {limit.get('Retry-After', '1')} s"
        await _refuse(send, status, code, message, {**(headers or {}), **limit})

    async def run_operation(self, request: OperationRequest, query: str, viewer: Viewer,
                            address: str) -> Payload:
        """A query or a mutation sent over a subscription transport: run as over HTTP
        (the schema's extensions: limits, rate limit), its one result."""
        context = self.hub.request_context(viewer, address)
        try:
            result = await self.schema.execute(
                query, variable_values=request.variables, context_value=context,
                operation_name=request.operation_name)
        finally:
            context.loaders.release()
        payload: Payload = {"data": result.data}
        if result.errors:
            payload["errors"] = [error.formatted for error in result.errors]
        return payload

    async def operation_parts(self, request: OperationRequest, query: str, viewer: Viewer,
                              address: str) -> AsyncIterator[Payload]:
        """A query or a mutation sent over SSE, which reads incremental delivery: its one
        result, or the parts of one with @defer or @stream (app/http/incremental.py)."""
        context = self.hub.request_context(viewer, address)
        context.incremental = True
        result: Any = None
        try:
            result = await self.schema.execute(
                query, variable_values=request.variables, context_value=context,
                operation_name=request.operation_name)
            if not isinstance(result, ExperimentalIncrementalExecutionResults):
                payload: Payload = {"data": result.data}
                if result.errors:
                    payload["errors"] = [error.formatted for error in result.errors]
                yield payload
                return
            hide = not self.settings.introspection
            yield first_payload(result, hide_suggestions=hide)
            async for part in later_payloads(result, context, hide_suggestions=hide):
                yield part
        finally:
            if isinstance(result, ExperimentalIncrementalExecutionResults):
                await discard(result)  # (the client left before the later parts)
            context.loaders.release()

    async def shutdown(self) -> None:
        """End every connection the way the client libraries retry (see the module), with
        what each has queued sent first, within a bound."""
        self.closing = True
        connections = list(self.connections)
        for connection in connections:
            connection.end("shutdown", (GOING_AWAY, "The gateway is shutting down: "
                                        "connect again"), flush=True)
        if connections:
            log.info("subscriptions: closing %d connections for shutdown", len(connections))
            with contextlib.suppress(TimeoutError):
                await self.clock.wait_for(self._gone(), SHUTDOWN_WAIT_S + CLOSE_WAIT_S)

    async def _gone(self) -> None:
        await self._empty.wait()

    def _opened(self, connection: Connection) -> None:
        self.connections.add(connection)
        SUBSCRIPTIONS.open = len(self.connections)  # outside MAX_CONNECTIONS
        self._empty.clear()

    def _closed(self, connection: Connection) -> None:
        self.connections.discard(connection)
        SUBSCRIPTIONS.open = len(self.connections)
        if not self.connections:
            self._empty.set()


async def _refuse(send: Send, status: int, code: str, message: str,
                  headers: dict[str, str] | None = None) -> None:
    body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())]})
    await send({"type": "http.response.body", "body": body})
