"""Each subscription field, over both protocols: what it sends, for which changes, resolved
like a query at the event's version or newer."""

from __future__ import annotations

import aiohttp
import pytest

from services.seed import Dataset
from tests.subscriptions.clients import subscribe
from tests.subscriptions.conftest import PROTOCOLS, Changes, Stack, bearer, wait_active

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stock_changed_sends_each_change_of_the_products_stock(
        protocol: str, stack: Stack, session: aiohttp.ClientSession, changes: Changes,
        dataset: Dataset) -> None:
    product = "p101" if protocol == "ws" else "p102"
    sku = dataset.products[product]["sku"]
    query = ("subscription S($id: ID!) { stockChanged(productId: $id) "
             "{ sku quantity inStock } }")
    async with subscribe(protocol, session, stack.memory.url, query, {"id": product}) as sub:
        await wait_active(session, stack.memory, 1)
        restocked = await changes.restock(sku, 3)
        assert (await sub.next())["data"]["stockChanged"] == {
            "sku": sku, "quantity": restocked, "inStock": True}
        # An order takes a unit: the inventory's change reaches the subscriber too.
        await changes.order("u7", product)
        assert (await sub.next())["data"]["stockChanged"]["quantity"] == restocked - 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_product_changed_sends_name_and_rating_changes(
        protocol: str, stack: Stack, session: aiohttp.ClientSession,
        changes: Changes) -> None:
    product = "p111" if protocol == "ws" else "p112"
    query = ('subscription { productChanged(id: "' + product + '") { id name reviewCount '
             "price { amount currency } } }")
    async with subscribe(protocol, session, stack.memory.url, query) as sub:
        await wait_active(session, stack.memory, 1)
        await changes.rename(product, f"Renamed {protocol}")
        first = (await sub.next())["data"]["productChanged"]
        assert first["id"] == product and first["name"] == f"Renamed {protocol}"
        # A review changes the product's rating (the reviews service updates the catalog).
        await changes.review(product, "u3", "a review that changes the rating")
        second = (await sub.next())["data"]["productChanged"]
        assert second["reviewCount"] == first["reviewCount"] + 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_review_added_sends_the_products_new_reviews_only(
        protocol: str, stack: Stack, session: aiohttp.ClientSession,
        changes: Changes) -> None:
    product, other = ("p121", "p122") if protocol == "ws" else ("p123", "p124")
    query = ('subscription { reviewAdded(productId: "' + product + '") '
             "{ id body rating author { id name } product { id } } }")
    async with subscribe(protocol, session, stack.memory.url, query) as sub:
        await wait_active(session, stack.memory, 1)
        await changes.review(other, "u4", "about another product")
        written = await changes.review(product, "u5", f"new review over {protocol}")
        review = (await sub.next())["data"]["reviewAdded"]
        assert review["id"] == written["id"]
        assert review["body"] == f"new review over {protocol}"
        assert review["author"]["id"] == "u5" and review["product"] == {"id": product}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_order_updated_sends_the_callers_own_orders(
        protocol: str, stack: Stack, session: aiohttp.ClientSession,
        changes: Changes) -> None:
    user, other = ("u21", "u22") if protocol == "ws" else ("u23", "u24")
    query = ("subscription { orderUpdated { id status total { amount } "
             "items { quantity product { id } } customer { id } } }")
    async with subscribe(protocol, session, stack.memory.url, query,
                         auth=bearer(user, "read:orders")) as sub:
        await wait_active(session, stack.memory, 1)
        await changes.order(other, "p130")
        placed = await changes.order(user, "p131")
        order = (await sub.next())["data"]["orderUpdated"]
        assert order["id"] == placed["id"] and order["status"] == "PLACED"
        assert order["customer"] == {"id": user}
        assert order["items"] == [{"quantity": 1, "product": {"id": "p131"}}]
        await changes.cancel(placed["id"])
        cancelled = (await sub.next())["data"]["orderUpdated"]
        assert (cancelled["id"], cancelled["status"]) == (placed["id"], "CANCELLED")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_subscription_is_refused_like_a_query(
        protocol: str, stack: Stack, session: aiohttp.ClientSession) -> None:
    cases = {
        'subscription { productChanged(id: "p-none") { name } }': "NOT_FOUND",
        'subscription { productChanged(id: "p1") { nope } }': "GRAPHQL_VALIDATION_FAILED",
        "subscription { productChanged(id: ": "GRAPHQL_PARSE_FAILED",
        # reviews(first: 100) { product { reviews(first: 100) { body } } }: over 10,000.
        'subscription { productChanged(id: "p1") { reviews(first: 100) { product '
        "{ reviews(first: 100) { body } } } } }": "QUERY_TOO_COMPLEX",
        "subscription S($id: ID!) { productChanged(id: $id) { name } }": "BAD_USER_INPUT",
    }
    for query, code in cases.items():
        async with subscribe(protocol, session, stack.memory.url, query) as sub:
            if protocol == "ws":  # an `error` message, which ends the operation
                errors = (await sub.end()).errors
            else:  # a `next` event with the errors, then `complete`
                errors = (await sub.next()).get("errors")
                assert (await sub.end()).complete
            assert errors and errors[0]["extensions"]["code"] == code, (query, errors)


async def test_a_query_over_either_transport_is_answered_once(
        stack: Stack, session: aiohttp.ClientSession) -> None:
    query = '{ product(id: "p140") { id } }'
    async with subscribe("ws", session, stack.memory.url, query) as sub:
        assert (await sub.next())["data"] == {"product": {"id": "p140"}}
        assert (await sub.end()).complete
    # SSE over GET, as an EventSource sends it.
    async with session.get(stack.memory.url + "/graphql", params={"query": query},
                           headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert text == ('event: next\ndata: {"data":{"product":{"id":"p140"}}}\n\n'
                    "event: complete\ndata: \n\n")


async def test_a_subscription_as_a_plain_http_request_says_where_to_subscribe(
        stack: Stack, session: aiohttp.ClientSession) -> None:
    async with session.post(stack.memory.url + "/graphql", json={
            "query": 'subscription { productChanged(id: "p141") { name } }'},
            headers={"Accept": "application/graphql-response+json"}) as resp:
        assert resp.status == 400
        error = (await resp.json())["errors"][0]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "graphql-transport-ws" in error["message"] and "text/event-stream" in error["message"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscribers_of_one_document_each_get_their_own_variables(
        protocol: str, stack: Stack, session: aiohttp.ClientSession,
        changes: Changes) -> None:
    # One document, two subscribers with other variables: the plan made for the first
    # event is kept with the document (app/execution/executor.py) and reused for the
    # second, whose arguments are its own.
    one, two = ("p171", "p172") if protocol == "ws" else ("p173", "p174")
    query = ("subscription S($id: ID!, $n: Int!) { productChanged(id: $id) "
             "{ id name reviews(first: $n) { id } } }")
    async with subscribe(protocol, session, stack.memory.url, query,
                         {"id": one, "n": 1}) as first, \
            subscribe(protocol, session, stack.memory.url, query,
                      {"id": two, "n": 3}) as second:
        await wait_active(session, stack.memory, 2)
        for round_ in range(2):
            await changes.rename(one, f"One {round_}")
            got = (await first.next())["data"]["productChanged"]
            assert (got["id"], got["name"], len(got["reviews"])) == (one, f"One {round_}", 1)
            await changes.rename(two, f"Two {round_}")
            got = (await second.next())["data"]["productChanged"]
            assert (got["id"], got["name"], len(got["reviews"])) == (two, f"Two {round_}", 3)
