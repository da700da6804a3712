"""Who subscribes: the token from connection_init (or the SSE request's header), scopes
checked when a subscription starts, and the connection's end when its token expires."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.harness import Gateway
from tests.subscriptions.clients import SSEStream, WSConnection, open_sse, subscribe
from tests.subscriptions.conftest import PROTOCOLS, Changes, Stack, bearer, wait_active

pytestmark = pytest.mark.asyncio(loop_scope="session")
ORDERS = "subscription { orderUpdated { id status } }"


async def refusal_code(protocol: str, session: aiohttp.ClientSession, url: str,
                       auth: dict[str, str] | None) -> str:
    async with subscribe(protocol, session, url, ORDERS, auth=auth) as sub:
        if protocol == "ws":
            errors = (await sub.end()).errors
        else:
            errors = (await sub.next()).get("errors")
            assert (await sub.end()).complete
    assert errors, errors
    return str(errors[0]["extensions"]["code"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_order_updated_needs_a_token_with_read_orders(
        protocol: str, stack: Stack, session: aiohttp.ClientSession) -> None:
    assert await refusal_code(protocol, session, stack.memory.url, None) == "UNAUTHENTICATED"
    assert await refusal_code(protocol, session, stack.memory.url,
                              bearer("u31", "write:orders")) == "FORBIDDEN"


async def test_the_token_is_read_from_connection_init_in_any_case(
        stack: Stack, session: aiohttp.ClientSession, changes: Changes) -> None:
    connection = await WSConnection.open(stack.memory.url)
    try:
        token = bearer("u32")["Authorization"]
        await connection.init({"authorization": token})
        subscriber = await connection.subscribe("o", ORDERS)
        await wait_active(session, stack.memory, 1)
        placed = await changes.order("u32", "p501")
        assert (await subscriber.next())["data"]["orderUpdated"]["id"] == placed["id"]
    finally:
        await connection.close()


async def test_a_bad_token_is_refused(stack: Stack, session: aiohttp.ClientSession) -> None:
    connection = await WSConnection.open(stack.memory.url)
    await connection.send({"type": "connection_init",
                           "payload": {"Authorization": "Bearer not-a-jwt"}})
    closed = await connection.closed_with()
    assert closed.code == 4403 and "not a JWT" in closed.reason
    response = await open_sse(session, stack.memory.url, ORDERS,
                              headers={"Authorization": "Bearer not-a-jwt"})
    assert not isinstance(response, SSEStream)
    assert response.status == 401
    assert (await response.json())["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_connection_ends_when_its_token_expires(
        protocol: str, limited: Gateway, session: aiohttp.ClientSession) -> None:
    # `limited` gives tokens no leeway: this one is refused from two seconds on.
    auth = bearer("u33", exp=int(time.time()) + 2)
    query = 'subscription { productChanged(id: "p502") { name } }'
    if protocol == "ws":
        connection = await WSConnection.open(limited.url)
        try:
            await connection.init(auth)
            subscriber = await connection.subscribe("1", query)
            closed = await subscriber.end()
            assert closed.code == 4403 and "expired" in closed.reason, closed
        finally:
            await connection.close()
    else:
        async with subscribe(protocol, session, limited.url, query, auth=auth) as sub:
            message = await sub.next()
            assert message["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert "expired" in message["errors"][0]["message"]
            # The stream ends without `complete`: graphql-sse reconnects (its headers may
            # carry a fresh token by then).
            assert not (await sub.end()).complete
