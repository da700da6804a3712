"""A real client on the same fixtures: Python's `gql` over graphql-transport-ws (its
WebSocket transport), with the token in connection_init."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

from services.seed import Dataset
from tests.subscriptions.conftest import Changes, Stack, bearer, wait_active

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_gql_subscribes_over_graphql_transport_ws(
        stack: Stack, session: aiohttp.ClientSession, changes: Changes,
        dataset: Dataset) -> None:
    sku = dataset.products["p901"]["sku"]
    transport = WebsocketsTransport(
        url=stack.memory.url.replace("http://", "ws://") + "/graphql",
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        init_payload=bearer("u91"))
    document = gql('subscription { stockChanged(productId: "p901") { sku quantity } }')
    async with Client(transport=transport) as client:
        results = client.subscribe(document)
        first = asyncio.ensure_future(anext(results))
        await wait_active(session, stack.memory, 1)
        restocked = await changes.restock(sku, 2)
        result = await asyncio.wait_for(first, 15)
        assert result == {"stockChanged": {"sku": sku, "quantity": restocked}}
        await results.aclose()
