"""The limits of subscription connections (the `limited` gateway: 2 subscriptions per
connection, 2 connections per client, 0.5 s to send connection_init, 20,000 bytes waiting
per connection, keep-alives every 0.2 s), and graphql-transport-ws's own close codes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from tests.harness import Gateway, start_gateway
from tests.subscriptions.clients import (
    WAIT_S,
    SSEStream,
    WSConnection,
    open_sse,
    small_receive_buffer,
)
from tests.subscriptions.conftest import Changes, Stack, bearer, metric, wait_active

pytestmark = pytest.mark.asyncio(loop_scope="session")
QUERY = 'subscription { productChanged(id: "p601") { name } }'
# About 18 kB per message: what a slow client lets pile up quickly.
BIG = ('subscription { productChanged(id: "p602") { name reviews(first: 20) { author { '
       "reviews(first: 20) { b1: body b2: body b3: body b4: body b5: body product { "
       "d1: description d2: description d3: description d4: description d5: description "
       "} } } } } }")


async def test_subscriptions_per_connection(limited: Gateway,
                                            session: aiohttp.ClientSession) -> None:
    connection = await WSConnection.open(limited.url)
    try:
        await connection.init(bearer("u41"))
        await connection.subscribe("1", QUERY)
        await connection.subscribe("2", QUERY)
        third = await connection.subscribe("3", QUERY)
        ended = await third.end()
        assert ended.errors is not None
        assert ended.errors[0]["extensions"] == {"code": "TOO_MANY_SUBSCRIPTIONS", "limit": 2}
        # The connection goes on: complete one, and there is room again.
        await wait_active(session, limited, 2)
        await connection.complete("1")
        await wait_active(session, limited, 1)
        await connection.subscribe("3", QUERY)
        await wait_active(session, limited, 2)
        await connection.send({"type": "ping"})
        assert await connection.expect_control() == {"type": "pong"}
    finally:
        await connection.close()


async def test_connections_per_client_over_both_protocols(
        limited: Gateway, session: aiohttp.ClientSession) -> None:
    auth = bearer("u42")
    first = await WSConnection.open(limited.url)
    await first.init(auth)
    second = await open_sse(session, limited.url, QUERY, headers=auth)
    assert isinstance(second, SSEStream)
    try:
        third = await WSConnection.open(limited.url)
        await third.send({"type": "connection_init", "payload": auth})
        closed = await third.closed_with()
        assert (closed.code, closed.reason) == (1013, "Too many connections for this client")
        refused = await open_sse(session, limited.url, QUERY, headers=auth)
        assert not isinstance(refused, SSEStream) and refused.status == 429
        body = await refused.json()
        assert body["errors"][0]["extensions"]["code"] == "TOO_MANY_CONNECTIONS"
        # Another client is not affected.
        other = await WSConnection.open(limited.url)
        await other.init(bearer("u43"))
        await other.close()
    finally:
        await first.close()
        await second.close()


async def test_connection_init_timeout(limited: Gateway) -> None:
    connection = await WSConnection.open(limited.url)
    closed = await connection.closed_with()
    assert (closed.code, closed.reason) == (4408, "Connection initialisation timeout")


async def test_graphql_transport_ws_close_codes(limited: Gateway) -> None:
    async def close_of(*messages: dict[str, Any] | str, acknowledged: bool = True
                       ) -> tuple[int | None, str]:
        connection = await WSConnection.open(limited.url)
        if acknowledged:
            await connection.init(bearer("u44"))
        for message in messages:
            await connection.send(message)
        closed = await connection.closed_with()
        return closed.code, closed.reason

    init = {"type": "connection_init", "payload": bearer("u44")}
    subscribe = {"type": "subscribe", "id": "1", "payload": {"query": QUERY}}
    assert await close_of(subscribe, acknowledged=False) == (4401, "Unauthorized")
    assert await close_of(init) == (4429, "Too many initialisation requests")
    assert await close_of(subscribe, subscribe) == (4409, "Subscriber for 1 already exists")
    assert await close_of("{not json") == (4400, "Invalid message received")
    assert await close_of({"type": "subscribe", "id": "1"}) == (
        4400, "Invalid message received")
    assert await close_of({"type": "next", "id": "1"}) == (
        4400, "Unexpected message of type next received")
    wrong = await WSConnection.open(limited.url, subprotocols=["graphql-ws"])
    closed = await wrong.closed_with()
    assert (closed.code, closed.reason) == (4406, "Subprotocol not acceptable")


async def test_keepalives_on_idle_connections(limited: Gateway,
                                              session: aiohttp.ClientSession) -> None:
    connection = await WSConnection.open(limited.url)
    try:
        await connection.init(bearer("u45"))
        assert await connection.expect_control(pings=True) == {"type": "ping"}
    finally:
        await connection.close()
    stream = await open_sse(session, limited.url, QUERY, headers=bearer("u46"))
    assert isinstance(stream, SSEStream)
    try:
        deadline = time.monotonic() + WAIT_S
        while ":" not in stream.events:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        await stream.close()


async def drive_until_dropped(session: aiohttp.ClientSession, gateway: Gateway,
                              changes: Changes, protocol: str) -> int:
    """Rename the product until the gateway drops a slow consumer; the renames it took."""
    dropped = await metric(session, gateway, "gateway_subscription_connections_closed_total",
                           protocol=protocol, reason="slow_consumer")
    for renames in range(1, 400):
        await changes.rename("p602", f"Slow {renames}")
        if await metric(session, gateway, "gateway_subscription_connections_closed_total",
                        protocol=protocol, reason="slow_consumer") > dropped:
            return renames
    raise AssertionError("the slow consumer was never dropped")


async def test_a_slow_websocket_consumer_is_dropped(
        limited: Gateway, session: aiohttp.ClientSession, changes: Changes) -> None:
    connection = await WSConnection.open(limited.url, receive_buffer=4096, max_queue=1,
                                         read=False)
    await connection.send({"type": "connection_init", "payload": bearer("u47")})
    assert orjson.loads(await connection.ws.recv()) == {"type": "connection_ack"}
    for i in (1, 2):
        await connection.send({"type": "subscribe", "id": str(i), "payload": {"query": BIG}})
    await wait_active(session, limited, 2)
    renames = await drive_until_dropped(session, limited, changes, "ws")
    # What the gateway queued for it went with it: its subscriptions are gone at once.
    await wait_active(session, limited, 0)
    connection.start_reading()
    closed = await connection.closed_with()
    assert closed.code == 1013 and closed.reason.startswith("Too slow"), closed
    received = sum(s.messages.qsize() for s in connection.subscribers.values())
    assert received < 2 * renames


async def test_a_slow_event_stream_consumer_is_dropped(
        limited: Gateway, session: aiohttp.ClientSession, changes: Changes) -> None:
    async with aiohttp.ClientSession(connector=small_receive_buffer(4096)) as slow:
        stream = await open_sse(slow, limited.url, BIG, headers=bearer("u48"),
                                read_bufsize=1024, read=False)
        assert isinstance(stream, SSEStream)
        try:
            await wait_active(session, limited, 1)
            renames = await drive_until_dropped(session, limited, changes, "sse")
            await wait_active(session, limited, 0)
            stream.start_reading()
            ended = await stream.subscriber.end()
            # The stream ends without `complete`: graphql-sse reconnects.
            assert not ended.complete
            assert stream.events.count("next") < renames
        finally:
            await stream.close()


async def test_subscription_connections_have_their_own_cap_beside_max_connections(
        stack: Stack, session: aiohttp.ClientSession) -> None:
    """Open subscription connections, and WebSocket upgrades, are not counted against
    MAX_CONNECTIONS (counted, they took every place and every request after them got 503,
    /events included; 5,000 clients connecting at once were refused), and
    MAX_SUBSCRIPTION_CONNECTIONS bounds them on both protocols."""
    gateway = await asyncio.to_thread(start_gateway, stack.tmp, stack.services, env={
        "MAX_CONNECTIONS": "4", "MAX_SUBSCRIPTION_CONNECTIONS": "6"})
    held: list[WSConnection] = []
    host, port = gateway.url.removeprefix("http://").split(":")
    # Five connections that have sent nothing yet (as handshakes waiting their turn in a
    # burst): a WebSocket upgrade beside them is not refused for MAX_CONNECTIONS.
    waiting = [await asyncio.open_connection(host, int(port)) for _ in range(5)]
    try:
        first = await WSConnection.open(gateway.url)
        await first.init()
        await first.close()
    finally:
        for _, writer in waiting:
            writer.close()
    try:
        for i in range(6):
            connection = await WSConnection.open(gateway.url)
            held.append(connection)
            await connection.init()
            await connection.subscribe(str(i), QUERY)
        await wait_active(session, gateway, 6)
        # Beside six subscription connections, a query is served as usual.
        async with session.post(gateway.url + "/graphql", json={
                "query": '{ product(id: "p601") { id } }'}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["data"]["product"] == {"id": "p601"}
        seventh = await WSConnection.open(gateway.url)
        closed = await seventh.closed_with()
        assert closed.code == 1013 and "subscription connections" in closed.reason
        refused = await open_sse(session, gateway.url, QUERY)
        assert not isinstance(refused, SSEStream) and refused.status == 503
        assert refused.headers["Retry-After"] == "1"
        assert (await refused.json())["errors"][0]["extensions"]["code"] == "OVER_CAPACITY"
        assert await metric(session, gateway, "gateway_subscription_connections_closed_total",
                            reason="over_capacity") == 2
        await held.pop().close()  # a place frees: the next one is served
        await wait_active(session, gateway, 5)
        stream = await open_sse(session, gateway.url, QUERY)
        assert isinstance(stream, SSEStream)
        await wait_active(session, gateway, 6)
        await stream.close()
    finally:
        for connection in held:
            await connection.close()
        gateway.stop()
