"""Per entity, the last version delivered: an older or repeated event sends nothing, on
either protocol (the services deliver at least once, late or reordered)."""

from __future__ import annotations

import aiohttp
import pytest

from services.seed import Dataset
from tests.subscriptions.clients import subscribe
from tests.subscriptions.conftest import (
    PROTOCOLS,
    Changes,
    Stack,
    metric,
    wait_active,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("replica", ["memory", "nocache"])
async def test_an_older_or_repeated_event_sends_nothing(
        protocol: str, replica: str, stack: Stack, session: aiohttp.ClientSession,
        changes: Changes, dataset: Dataset) -> None:
    gateway = getattr(stack, replica)
    product = {"ws": {"memory": "p301", "nocache": "p302"},
               "sse": {"memory": "p303", "nocache": "p304"}}[protocol][replica]
    sku = dataset.products[product]["sku"]
    query = 'subscription { stockChanged(productId: "' + product + '") { quantity } }'
    stale = await metric(session, gateway, "gateway_subscription_events_total",
                         entity="Stock", outcome="stale")
    async with subscribe(protocol, session, gateway.url, query) as sub:
        await wait_active(session, gateway, 1)
        first = await changes.restock(sku, 1)
        assert (await sub.next())["data"]["stockChanged"]["quantity"] == first
        second = await changes.restock(sku, 1)
        assert (await sub.next())["data"]["stockChanged"]["quantity"] == second
        # The last event again, then the one before it: both delivered by "the service".
        recorded = stack.relay.events("Stock", sku)
        assert [e["version"] for e, _, _ in recorded][-2:] == sorted(
            e["version"] for e, _, _ in recorded[-2:])
        for _, body, headers in (recorded[-1], recorded[-2]):
            # Answered once the gateway has decided (the cache's version check, or without
            # a cache the hub's own).
            assert await stack.relay.deliver(gateway.url, body, headers) == 204
        if replica == "nocache":
            assert await metric(session, gateway, "gateway_subscription_events_total",
                                entity="Stock", outcome="stale") == stale + 2
        # Then a new change: the next message is its own, nothing came in between (events
        # of one entity fan out in the order they came).
        third = await changes.restock(sku, 1)
        assert (await sub.next())["data"]["stockChanged"]["quantity"] == third
