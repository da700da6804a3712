"""Whole responses of PUBLIC operations, answered without executing anything, until a change
event of a type they read."""

from __future__ import annotations

import asyncio
import time

from services.seed import Dataset
from tests.cache.conftest import CacheStack, Query, upstream_calls
from tests.harness import http

DOC = 'query($id: ID!) { product(id: $id) { id name reviews(first: 2) { id } } }'


def upstream_total(stack: CacheStack) -> int:
    return sum(sum(s["requests"].values()) for s in stack.services.all_stats().values())


async def test_a_public_response_is_served_whole(query: Query, cstack: CacheStack) -> None:
    gw = cstack.responses
    _, first_headers, first = await query(gw, DOC, {"id": "p3400"})
    assert "Age" not in first_headers
    cstack.services.reset_stats()
    _, headers, again = await query(gw, DOC, {"id": "p3400"})
    assert again == first and "Age" in headers
    assert headers["Cache-Control"] == first_headers["Cache-Control"] == "max-age=60, public"
    assert upstream_total(cstack) == 0
    # Other variables are another entry.
    _, headers, other = await query(gw, DOC, {"id": "p3401"})
    assert "Age" not in headers and other["data"]["product"]["id"] == "p3401"


async def test_private_failed_and_mutating_operations_are_not_stored(
    query: Query, cstack: CacheStack
) -> None:
    gw = cstack.responses
    for document, user in (("{ me { id username } }", "u70"),
                           ('{ category(id: "c1") { products(after: "x") { edges { cursor } } } }',
                            None)):
        await query(gw, document, user=user)
        _, headers, _ = await query(gw, document, user=user)
        assert "Age" not in headers, document
    # A mutation, sent twice alike: both run (two reviews written), neither is answered
    # from the cache.
    cstack.services.reset_stats()
    add = ('mutation($input: AddReviewInput!) { addReview(input: $input) { '
           'review { id rating product { id name } } errors { code } } }')
    variables = {"input": {"productId": "p3403", "rating": 5, "body": "Twice the same."}}
    replies = [await query(gw, add, variables, user="u71") for _ in range(2)]
    reviews = []
    for status, headers, body in replies:
        assert status == 200 and "errors" not in body, body
        payload = body["data"]["addReview"]
        assert payload["errors"] == [] and payload["review"]["product"]["id"] == "p3403"
        assert "Age" not in headers, headers
        reviews.append(payload["review"]["id"])
    assert reviews[0] != reviews[1], reviews
    assert upstream_calls(cstack.services, "reviews", "POST /reviews") == 2


async def test_a_change_event_invalidates_the_responses_that_read_its_type(
    query: Query, cstack: CacheStack
) -> None:
    gw = cstack.responses
    await query(gw, DOC, {"id": "p3402"})
    _, headers, _ = await query(gw, DOC, {"id": "p3402"})
    assert "Age" in headers
    name = f"Renamed {time.time()}"
    http("PATCH", cstack.services.url("catalog") + "/products/p3402", {"name": name})
    started = time.monotonic()
    while True:
        _, headers, body = await query(gw, DOC, {"id": "p3402"})
        if body["data"]["product"]["name"] == name:
            break
        assert time.monotonic() - started < 2
        await asyncio.sleep(0.01)
    assert "Age" not in headers


async def test_an_order_evicts_only_the_responses_that_read_its_products_stock(
    query: Query, cstack: CacheStack, dataset: Dataset
) -> None:
    # Issue 16 (f): a response depends on the entities it read, not on every change of their
    # types: each order used to evict every cached product response.
    gw = cstack.responses
    doc = 'query($id: ID!) { product(id: $id) { id inStock inventory { quantity } } }'
    other, ordered = [p for p, d in dataset.products.items() if 3404 <= int(p[1:]) < 3500
                      and dataset.stock[d["sku"]]["quantity"] >= 5][:2]
    for pid in (other, ordered):
        await query(gw, doc, {"id": pid})
        _, headers, _ = await query(gw, doc, {"id": pid})
        assert "Age" in headers, pid
    _, _, before = await query(gw, doc, {"id": ordered})
    _, _, placed = await query(gw, """mutation($p: ID!, $k: String!) {
        placeOrder(input: {items: [{productId: $p, quantity: 1}], idempotencyKey: $k}) {
          order { id } errors { code } } }""", {"p": ordered, "k": f"f-{time.time()}"},
        user="u72")
    assert placed["data"]["placeOrder"]["errors"] == [], placed
    _, headers, after = await query(gw, doc, {"id": ordered})
    assert "Age" not in headers
    assert (after["data"]["product"]["inventory"]["quantity"]
            == before["data"]["product"]["inventory"]["quantity"] - 1)
    _, headers, _ = await query(gw, doc, {"id": other})
    assert "Age" in headers  # another product's stock: still served whole
