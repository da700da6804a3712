"""Two replicas sharing Redis: an event delivered to one reaches the subscribers of the
other, after the other has evicted what the event changed, in version order per entity."""

from __future__ import annotations

import aiohttp
import pytest

from services.seed import Dataset
from tests.subscriptions.clients import subscribe
from tests.subscriptions.conftest import PROTOCOLS, Changes, Stack, wait_active

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def stock_via(session: aiohttp.ClientSession, url: str, product: str) -> int:
    async with session.post(url + "/graphql", json={
            "query": '{ product(id: "' + product + '") { inventory { quantity } } }'}) as resp:
        body = await resp.json()
    return int(body["data"]["product"]["inventory"]["quantity"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_event_at_one_replica_reaches_the_other_replicas_subscribers_in_order(
        protocol: str, stack: Stack, session: aiohttp.ClientSession, changes: Changes,
        dataset: Dataset) -> None:
    product = "p401" if protocol == "ws" else "p402"
    sku = dataset.products[product]["sku"]
    # b caches the stock (Stock: 5 s); only a receives the services' events.
    cached = await stock_via(session, stack.b.url, product)
    query = 'subscription { stockChanged(productId: "' + product + '") { quantity } }'
    async with subscribe(protocol, session, stack.b.url, query) as sub:
        await wait_active(session, stack.b, 1)
        for _ in range(3):
            restocked = await changes.restock(sku, 1)
            # Resolved on b after b evicted its cached stock: the new quantity, not `cached`.
            assert (await sub.next())["data"]["stockChanged"]["quantity"] == restocked
        assert restocked == cached + 3
        # A burst: the events may reach a out of order (a applies the newest, ignores
        # older ones); b's messages never go back.
        for _ in range(6):
            last = await changes.restock(sku, 1)
        seen: list[int] = []
        while not seen or seen[-1] != last:
            seen.append((await sub.next())["data"]["stockChanged"]["quantity"])
        assert seen == sorted(seen) and seen[0] > restocked, seen
