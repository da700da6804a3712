"""Bounded reads on every connection: uvicorn's httptools protocol with the limits it lacks.

uvicorn bounds an idle keep-alive connection (KEEPALIVE_TIMEOUT_S, after a response) and the
connections and requests a process serves (`limit_concurrency`: MAX_CONNECTIONS), but not a
client that sends its request slowly: a connection that sent part of its headers, or part of
its body, was still open after 300 s, and a header of any size was read into memory. An ASGI
middleware cannot help before the headers are complete (the app is not called until then),
so the limits live here, in the protocol that reads the bytes:

- a new connection that sends nothing is closed after KEEPALIVE_TIMEOUT_S, silently;
- a request's line and headers must arrive within HEADER_TIMEOUT_S of their first byte, and
  its whole body within BODY_TIMEOUT_S of the headers' end: otherwise 408 and the connection
  is closed (a total time, not a time between bytes: a client trickling one byte a second
  is closed all the same);
- the line and headers may take MAX_HEADER_BYTES, counted as they arrive: 431 and closed
  as soon as they pass it, before the rest is read;
- beyond MAX_CONNECTIONS connections (or requests in flight) a request gets 503 with
  Retry-After at once, and its connection is closed; such a connection has a second, not
  HEADER_TIMEOUT_S, to send its headers. Open subscription connections (WebSockets, SSE
  streams: `SUBSCRIPTIONS`) are not counted: they have their own cap,
  MAX_SUBSCRIPTION_CONNECTIONS (app.http.subscriptions). Counted, 1,000 idle subscribers
  took every place, and every request after them, /events and /healthz included, got 503.
  Nor is a WebSocket upgrade refused here: 5,000 clients connecting at once were, while
  their handshakes waited their turn, 1,000 connections and more.

Each refusal is counted (`gateway_http_aborted_total{reason}`) and logged at info: these are
the client's doing, not the gateway's failures. A body timeout ends the request as a client
disconnect does (the app's `receive` says `http.disconnect`); `app.http.transport` turns that
into a log line and a metric, never a 500.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.telemetry import metrics
from app.telemetry.requests import ABORTED

log = logging.getLogger("gateway.connections")

# A connection beyond MAX_CONNECTIONS must show its request at once: it is answered 503.
OVER_CAPACITY_HEADER_TIMEOUT_S = 1.0

STATUS_LINES = {408: b"HTTP/1.1 408 Request Timeout\r\n",
                431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
                503: b"HTTP/1.1 503 Service Unavailable\r\n"}


def refusal(status: int, code: str, message: str,
            extra_headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A whole HTTP response with the gateway's JSON error shape, closing the connection."""
    body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})
    head = [STATUS_LINES[status], b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body), b"connection: close\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in extra_headers]
    return b"".join(head) + b"\r\n" + body


class SubscriptionConnections:
    """How many of this process's connections serve subscriptions (each is one connection
    and one task to uvicorn): kept by `app.http.subscriptions.Streams`."""

    open = 0


SUBSCRIPTIONS = SubscriptionConnections()

OVER_CAPACITY = refusal(503, "OVER_CAPACITY", "The gateway is serving as many connections as "
                        "it may; retry shortly", ((b"retry-after", b"1"),))


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol, plus the header and body timeouts, the header size limit and a
    JSON 503 beyond MAX_CONNECTIONS. Settings come from `configure` (app/http/server.py)."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0
    max_header_bytes = 16_384

    @classmethod
    def configure(cls, header_timeout_s: float, body_timeout_s: float,
                  max_header_bytes: int) -> type[GuardedHttpToolsProtocol]:
        """A subclass with these limits (uvicorn builds the protocol with its own arguments)."""
        return type("GuardedHttpToolsProtocol", (cls,), {
            "header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s,
            "max_header_bytes": max_header_bytes})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The cap is uvicorn's setting, checked here so that the refusal is the gateway's
        # JSON (with Retry-After), counted, and not a warning logged per request.
        self.capacity = self.limit_concurrency
        self.limit_concurrency = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_message = False  # from a request's first byte to its body's end
        self._reading_headers = False
        self._header_bytes = 0
        self._over_capacity = False
        self._done = False  # answered and closing: the rest of the input is ignored

    # -- timers ----------------------------------------------------------------------------
    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, reason: str) -> None:
        self._timer = None
        if self._done or self.transport.is_closing():
            return
        cycle = self.cycle
        answering = cycle is not None and cycle.response_started
        if reason == "body_timeout" and cycle is not None and not cycle.response_complete:
            # The app may be waiting for the body: it reads a disconnect, and what it would
            # send is dropped. Its log line and metric say why (app.http.transport).
            cycle.scope["state"][ABORTED] = reason
            cycle.disconnected = True
            cycle.message_event.set()
        if answering:
            self._close(reason, None)  # a response is being written: it cannot be a 408
        elif self._over_capacity and reason == "header_timeout":
            self._close("over_capacity", OVER_CAPACITY)
        else:
            which = "headers" if reason != "body_timeout" else "body"
            self._close(reason, refusal(408, "REQUEST_TIMEOUT",
                                        f"The request's {which} did not arrive in time"))

    # -- refusals --------------------------------------------------------------------------
    def _close(self, reason: str, response: bytes | None) -> None:
        self._done = True
        self._disarm()
        if response is not None:
            self.transport.write(response)
        self.transport.close()
        metrics.aborted(reason)
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
        log.info("connection closed: %s", reason.replace("_", " "),
                 extra={"reason": reason, "client": client})

    # -- uvicorn's protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if (self.capacity is not None
                and len(self.connections) - SUBSCRIPTIONS.open > self.capacity):
            self._over_capacity = True
        # Nothing sent yet: idle, as between requests (silently closed, as uvicorn does
        # after a response). The header timeout starts with the request's first byte.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._done = True
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        if not self._in_message and self._timer is None:
            # Bytes between requests (the next request's first, or blank lines, which the
            # parser skips without starting a request): the header timeout runs.
            self._arm_header_timer()
        super().data_received(data)
        if self._reading_headers and not self._done:
            # (An over-estimate when a pipelined request began mid-chunk: never an under-.)
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._too_large()

    def _arm_header_timer(self) -> None:
        self._arm(OVER_CAPACITY_HEADER_TIMEOUT_S if self._over_capacity
                  else self.header_timeout_s, "header_timeout")

    def _too_large(self) -> None:
        self._close("headers_too_large", refusal(
            431, "HEADERS_TOO_LARGE",
            f"The request line and headers are over {self.max_header_bytes} bytes"))

    def on_message_begin(self) -> None:
        if self._done:
            return
        super().on_message_begin()
        self._in_message = True
        self._reading_headers = True
        self._header_bytes = 0
        if self._timer is None:
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        if not self._done:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._done:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._done:
            return
        self._reading_headers = False
        self._disarm()
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.max_header_bytes:
            self._too_large()
            return
        held = SUBSCRIPTIONS.open  # counted against their own cap, not this one
        # A WebSocket upgrade becomes a subscription connection: MAX_SUBSCRIPTION_CONNECTIONS
        # bounds it (close 1013, which graphql-ws retries), not a 503 here.
        upgrade = self.parser.should_upgrade() and self._should_upgrade()
        if self.capacity is not None and not upgrade and (
                len(self.connections) - held > self.capacity
                or len(self.tasks) - held >= self.capacity):
            self._close("over_capacity", OVER_CAPACITY)
            return
        self._over_capacity = False  # served: its next requests get the usual time
        self._arm(self.body_timeout_s, "body_timeout")
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        # The connection is another protocol's from now on (the gateway serves no WebSocket
        # route: the app refuses it).
        self._disarm()
        self._done = True
        super().handle_websocket_upgrade()

    def on_body(self, body: bytes) -> None:
        if not self._done:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._done:
            return
        self._in_message = False
        self._disarm()
        super().on_message_complete()
