"""Protocol-level subscription clients for the tests: graphql-transport-ws over the
`websockets` package, and GraphQL over Server-Sent Events (distinct connections) over aiohttp.

Both give a test the same handle (`Subscriber`): the payloads of `next` messages in order,
and how the subscription ended. `subscribe(protocol, ...)` opens one; a test parametrized by
protocol runs on both. (A real client library's test can use the same fixtures: the gateways,
the relay, `wait_active`, with its own connection code.)
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

WS_PROTOCOL = "graphql-transport-ws"
WAIT_S = 15.0  # a hang guard, not an expectation of how long anything takes


@dataclass
class Ended:
    """How a subscription or its connection ended: a WebSocket close (code, reason), an
    `error` message, a `complete`, or an event stream's end (complete or not)."""

    code: int | None = None
    reason: str = ""
    complete: bool = False
    errors: list[dict[str, Any]] | None = None


@dataclass
class Subscriber:
    """One subscription's messages (the `next` payloads) and its end."""

    messages: asyncio.Queue[dict[str, Any] | Ended] = field(default_factory=asyncio.Queue)
    ended: Ended | None = None

    async def next(self, within: float = WAIT_S) -> dict[str, Any]:
        """The next `next` payload; fails if the subscription ends instead."""
        item = await asyncio.wait_for(self.messages.get(), within)
        assert not isinstance(item, Ended), f"ended instead of a message: {item}"
        return item

    async def end(self, within: float = WAIT_S) -> Ended:
        """Skip messages until the subscription ends; how it ended."""
        while True:
            item = await asyncio.wait_for(self.messages.get(), within)
            if isinstance(item, Ended):
                return item

    def finish(self, ended: Ended) -> None:
        if self.ended is None:
            self.ended = ended
            self.messages.put_nowait(ended)


class WSConnection:
    """A graphql-transport-ws connection: its raw messages demultiplexed by subscription id;
    protocol messages (connection_ack, pong, ping) and the close in `control`."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.subscribers: dict[str, Subscriber] = {}
        self.control: asyncio.Queue[dict[str, Any] | Ended] = asyncio.Queue()
        self.closed: Ended | None = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, base_url: str, *, subprotocols: list[str] | None = None,
                   headers: dict[str, str] | None = None, receive_buffer: int | None = None,
                   max_queue: int | None = 16, read: bool = True) -> WSConnection:
        """Connect; `receive_buffer` shrinks the socket's receive buffer (a slow client);
        `read` False leaves messages unread until `start_reading`."""
        sock = None
        if receive_buffer is not None:
            host, port = base_url.removeprefix("http://").split(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.connect((host, int(port)))
            sock.setblocking(False)
        ws = await websockets.connect(
            base_url.replace("http://", "ws://") + "/graphql",
            subprotocols=[Subprotocol(p) for p in
                          (subprotocols if subprotocols is not None else [WS_PROTOCOL])],
            additional_headers=headers, sock=sock, max_queue=max_queue, ping_interval=None,
            open_timeout=WAIT_S)
        connection = cls(ws)
        if read:
            connection.start_reading()
        return connection

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else orjson.dumps(message).decode())

    async def init(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """connection_init; the server's answer (connection_ack, else fails)."""
        await self.send({"type": "connection_init", "payload": payload or {}})
        answer = await self.expect_control()
        assert answer == {"type": "connection_ack"}, answer
        return answer

    async def expect_control(self, within: float = WAIT_S, *,
                             pings: bool = False) -> dict[str, Any]:
        """The next protocol message (the server's keep-alive pings skipped, unless
        `pings`); fails if the connection closes instead."""
        while True:
            item = await asyncio.wait_for(self.control.get(), within)
            assert not isinstance(item, Ended), f"closed: {item}"
            if pings or item != {"type": "ping"}:
                return item

    async def closed_with(self, within: float = WAIT_S) -> Ended:
        """Skip protocol messages until the connection closes; its close."""
        while True:
            item = await asyncio.wait_for(self.control.get(), within)
            if isinstance(item, Ended):
                return item

    async def subscribe(self, subscription_id: str, query: str,
                        variables: dict[str, Any] | None = None) -> Subscriber:
        subscriber = self.subscribers[subscription_id] = Subscriber()
        await self.send({"type": "subscribe", "id": subscription_id,
                         "payload": {"query": query, "variables": variables or {}}})
        return subscriber

    async def complete(self, subscription_id: str) -> None:
        await self.send({"type": "complete", "id": subscription_id})

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = orjson.loads(raw)
                subscriber = self.subscribers.get(message.get("id", ""))
                kind = message.get("type")
                if subscriber is not None and kind == "next":
                    subscriber.messages.put_nowait(message["payload"])
                elif subscriber is not None and kind == "error":
                    subscriber.finish(Ended(errors=message["payload"]))
                elif subscriber is not None and kind == "complete":
                    subscriber.finish(Ended(complete=True))
                else:
                    self.control.put_nowait(message)
        except websockets.ConnectionClosed:
            pass
        ended = Ended(code=self.ws.close_code, reason=self.ws.close_reason or "")
        self.closed = ended
        self.control.put_nowait(ended)
        for subscriber in self.subscribers.values():
            subscriber.finish(ended)

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=WAIT_S)


class SSEStream:
    """One GraphQL over SSE request (distinct connections mode)."""

    def __init__(self, response: aiohttp.ClientResponse, read: bool = True) -> None:
        self.response = response
        self.subscriber = Subscriber()
        self.events: list[str] = []  # every event's name, keep-alive comments as ":"
        self._reader: asyncio.Task[None] | None = None
        if read:
            self.start_reading()

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        event, data = "", []
        complete = False
        pending = b""
        try:
            # Chunks, split into lines here: aiohttp's own line reader refuses a line longer
            # than its buffer, and a message is one line of any length.
            async for chunk in self.response.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode().rstrip("\r")
                    if line.startswith(":"):
                        self.events.append(":")
                    elif line.startswith("event:"):
                        event = line.removeprefix("event:").strip()
                    elif line.startswith("data:"):
                        data.append(line.removeprefix("data:").strip())
                    elif line == "" and event:
                        self.events.append(event)
                        if event == "next":
                            self.subscriber.messages.put_nowait(orjson.loads("\n".join(data)))
                        elif event == "complete":
                            complete = True
                        event, data = "", []
        except (aiohttp.ClientError, asyncio.CancelledError):
            pass
        self.subscriber.finish(Ended(complete=complete))

    async def close(self) -> None:
        self.response.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader], timeout=WAIT_S)


async def open_sse(session: aiohttp.ClientSession, base_url: str, query: str,
                   variables: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None, *,
                   read_bufsize: int = 2**16, read: bool = True
                   ) -> SSEStream | aiohttp.ClientResponse:
    """POST the operation with Accept: text/event-stream; the stream, or the response when
    the gateway refused it with a status."""
    response = await session.post(
        base_url + "/graphql", json={"query": query, "variables": variables or {}},
        headers={"Accept": "text/event-stream", **(headers or {})},
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=WAIT_S),
        read_bufsize=read_bufsize)
    if response.status != 200:
        return response
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return SSEStream(response, read)


def small_receive_buffer(size: int) -> aiohttp.TCPConnector:
    """A connector whose sockets have a small receive buffer: a client that stops reading
    fills it, and the server's send blocks, sooner."""
    def factory(addr_info: Any) -> socket.socket:
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return sock

    return aiohttp.TCPConnector(socket_factory=factory)


@asynccontextmanager
async def subscribe(protocol: str, session: aiohttp.ClientSession, base_url: str, query: str,
                    variables: dict[str, Any] | None = None,
                    auth: dict[str, str] | None = None) -> AsyncIterator[Subscriber]:
    """One subscription over `protocol` (ws or sse), on a connection of its own; `auth`
    the connection_init payload (WebSocket) or the request's headers (SSE)."""
    if protocol == "ws":
        connection = await WSConnection.open(base_url)
        try:
            await connection.init(auth)
            yield await connection.subscribe("1", query, variables)
        finally:
            await connection.close()
    else:
        stream = await open_sse(session, base_url, query, variables, auth)
        assert isinstance(stream, SSEStream), f"refused: {stream.status}"
        try:
            yield stream.subscriber
        finally:
            await stream.close()
