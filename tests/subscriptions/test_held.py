"""A replica cut off from Redis holds the evictions it cannot share and answers their events
503, so that their services deliver them again (tests/cache/test_held_evictions.py): its
subscribers, and the other replica's, hear such an event once, when it is finally applied,
never twice."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest

from tests.cache.test_held_evictions import Partitioned, partitioned  # noqa: F401 (fixture)
from tests.gateway.test_events import post, signed
from tests.subscriptions.clients import subscribe
from tests.subscriptions.conftest import wait_active

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("protocol", ["ws"])
async def test_a_held_event_is_delivered_once_when_applied(
        protocol: str, partitioned: Partitioned,  # noqa: F811 (the fixture)
        session: aiohttp.ClientSession) -> None:
    pid = "p4201"
    query = 'subscription { productChanged(id: "' + pid + '") { name } }'
    catalog = partitioned.services.url("catalog")

    async def rename(name: str) -> bytes:
        async with session.patch(f"{catalog}/products/{pid}", json={"name": name}) as resp:
            assert resp.status == 200
        return orjson.dumps({"type": "Product", "id": pid, "op": "update",
                             "version": time.time_ns(), "at": "2026-12-03T10:00:00Z"})

    async with subscribe(protocol, session, partitioned.a.url, query) as on_a, \
            subscribe(protocol, session, partitioned.b.url, query) as on_b:
        await wait_active(session, partitioned.a, 1)
        await wait_active(session, partitioned.b, 1)
        event = await rename("Held once")
        partitioned.cut()
        try:
            status, _ = await post(session, partitioned.a, event, signed(event))
            assert status == 503  # held: not acknowledged, nothing sent to anyone
        finally:
            partitioned.heal()
        deadline = time.monotonic() + 15
        while (await post(session, partitioned.a, event, signed(event)))[0] != 204:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        # Heard once applied; read before the next rename, as a subscriber gets an entity's
        # latest state (a fan-out still running when the product changes again reads it).
        for subscriber in (on_a, on_b):
            assert (await subscriber.next())["data"]["productChanged"]["name"] == "Held once"
        # Once applied, further deliveries are acknowledged and ignored: the next message
        # each subscriber gets is the next change, not the held event again.
        assert (await post(session, partitioned.a, event, signed(event)))[0] == 204
        after = await rename("After it")
        assert (await post(session, partitioned.a, after, signed(after)))[0] == 204
        for subscriber in (on_a, on_b):
            assert (await subscriber.next())["data"]["productChanged"]["name"] == "After it"
