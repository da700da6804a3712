"""One event, many subscribers: the entity is read once, and the subscribers' selections
batch together as one query's would (the services' /_stats count the calls)."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import aiohttp
import orjson
import pytest

from tests.gateway.test_events import post, signed
from tests.harness import Services
from tests.subscriptions.clients import Subscriber, WSConnection, open_sse
from tests.subscriptions.conftest import PROTOCOLS, Changes, Stack, metric, wait_active

pytestmark = pytest.mark.asyncio(loop_scope="session")
SUBSCRIBERS = 8


def calls(services: Services, service: str, route: str) -> tuple[int, int]:
    stats = services.stats(service)
    return stats["requests"].get(route, 0), stats["items"].get(route, 0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_event_costs_one_fetch_per_entity_whatever_the_subscribers(
        protocol: str, stack: Stack, session: aiohttp.ClientSession, svc: Services,
        changes: Changes) -> None:
    product = "p201" if protocol == "ws" else "p202"
    query = ('subscription { productChanged(id: "' + product + '") { name '
             "reviews(first: 5) { body author { name } } } }")
    async with AsyncExitStack() as exits:
        subscribers: list[Subscriber] = []
        if protocol == "ws":  # two connections of four subscriptions
            for c in range(2):
                connection = await WSConnection.open(stack.nocache.url)
                exits.push_async_callback(connection.close)
                await connection.init()
                for i in range(SUBSCRIBERS // 2):
                    subscribers.append(await connection.subscribe(f"{c}-{i}", query))
        else:
            for _ in range(SUBSCRIBERS):
                stream = await open_sse(session, stack.nocache.url, query)
                assert not isinstance(stream, aiohttp.ClientResponse)
                exits.push_async_callback(stream.close)
                subscribers.append(stream.subscriber)
        await wait_active(session, stack.nocache, SUBSCRIBERS)
        svc.reset_stats()
        await changes.rename(product, "Fanned out")
        messages = await asyncio.gather(*(s.next() for s in subscribers))
    assert {m["data"]["productChanged"]["name"] for m in messages} == {"Fanned out"}
    assert len({str(m) for m in messages}) == 1  # the same answer for everyone
    # The gateway here has no entity cache: only the fan-out's shared loaders dedupe.
    assert calls(svc, "catalog", "GET /products") == (1, 1)
    assert calls(svc, "reviews", "GET /reviews")[0] == 1
    authors = {r["author"]["name"] for r in messages[0]["data"]["productChanged"]["reviews"]}
    assert calls(svc, "users", "GET /users")[0] == (1 if authors else 0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_subscribers_nested_selections_batch_as_a_querys_do(
        protocol: str, stack: Stack, session: aiohttp.ClientSession, svc: Services,
        changes: Changes) -> None:
    product = "p211" if protocol == "ws" else "p212"
    query = ('subscription { productChanged(id: "' + product + '") { name reviews(first: 10) '
             "{ author { name reviews(first: 3) { product { name inStock } } } } } }")
    async with AsyncExitStack() as exits:
        if protocol == "ws":
            connection = await WSConnection.open(stack.nocache.url)
            exits.push_async_callback(connection.close)
            await connection.init()
            subscriber = await connection.subscribe("1", query)
        else:
            stream = await open_sse(session, stack.nocache.url, query)
            assert not isinstance(stream, aiohttp.ClientResponse)
            exits.push_async_callback(stream.close)
            subscriber = stream.subscriber
        await wait_active(session, stack.nocache, 1)
        svc.reset_stats()
        await changes.rename(product, "Nested")
        message = (await subscriber.next())["data"]["productChanged"]
    reviews = message["reviews"]
    assert reviews and all(r["author"]["reviews"] for r in reviews)
    # One call per level, never one per item: the product, its reviews, their authors,
    # the authors' reviews, those reviews' products, their stock.
    assert calls(svc, "catalog", "GET /products")[0] == 2
    assert calls(svc, "reviews", "GET /reviews")[0] == 2
    assert calls(svc, "users", "GET /users")[0] == 1
    assert calls(svc, "inventory", "POST /inventory/query")[0] == 1


async def test_each_subscribers_message_goes_out_once_its_own_selection_is_resolved(
        stack: Stack, session: aiohttp.ClientSession, svc: Services,
        changes: Changes) -> None:
    """Two subscribers of one event on one connection (its messages keep their order): the
    one that reads only the product is sent first, without waiting for the one whose
    selection reads the slowed reviews service, although it subscribed second."""
    product = "p221"
    connection = await WSConnection.open(stack.nocache.url)
    try:
        await connection.init()
        slow = await connection.subscribe("slow", 'subscription { productChanged(id: "'
                                          + product + '") { name reviews(first: 2) { body } } }')
        await wait_active(session, stack.nocache, 1)
        fast = await connection.subscribe("fast", 'subscription { productChanged(id: "'
                                          + product + '") { name } }')
        await wait_active(session, stack.nocache, 2)
        svc.set_faults("reviews", latency_ms=300)
        await changes.rename(product, "Streamed")
        first = await fast.next()
        assert slow.messages.empty()  # not sent yet: the fast one did not wait for it
        second = await slow.next()
    finally:
        await connection.close()
    assert first["data"]["productChanged"] == {"name": "Streamed"}
    assert second["data"]["productChanged"]["name"] == "Streamed"
    assert "errors" not in second


async def test_events_that_come_during_a_fan_out_coalesce_to_the_latest(
        stack: Stack, session: aiohttp.ClientSession, svc: Services) -> None:
    """Ten events of one product while its first fan-out waits on the (slowed) catalog: the
    eight in between are never fanned out, the latest is; then a marker event. The
    subscriber gets three messages, not eleven."""
    product = "p231"  # no other test's: the versions here are ahead of the catalog's
    gateway = stack.nocache  # the hub hears /events directly
    connection = await WSConnection.open(gateway.url)
    try:
        await connection.init()
        subscriber = await connection.subscribe(
            "1", 'subscription { productChanged(id: "' + product + '") { id name } }')
        await wait_active(session, gateway, 1)
        before = {outcome: await metric(session, gateway, "gateway_subscription_events_total",
                                        entity="Product", outcome=outcome)
                  for outcome in ("fanned_out", "coalesced")}
        svc.set_faults("catalog", latency_ms=300)
        base = time.time_ns()
        for version in range(base, base + 10):
            body = orjson.dumps({"type": "Product", "id": product, "op": "update",
                                 "version": version, "at": "2026-12-03T10:00:00Z"})
            assert (await post(session, gateway, body, signed(body)))[0] == 204
        await subscriber.next()  # the first event's
        await subscriber.next()  # the latest's
        svc.clear_faults()
        marker = orjson.dumps({"type": "Product", "id": product, "op": "update",
                               "version": base + 10, "at": "2026-12-03T10:00:00Z"})
        assert (await post(session, gateway, marker, signed(marker)))[0] == 204
        await subscriber.next()  # the marker's: nothing came between
        assert subscriber.messages.empty()
        after = {outcome: await metric(session, gateway, "gateway_subscription_events_total",
                                       entity="Product", outcome=outcome)
                 for outcome in ("fanned_out", "coalesced")}
    finally:
        await connection.close()
    assert after["fanned_out"] - before["fanned_out"] == 3
    assert after["coalesced"] - before["coalesced"] == 8
