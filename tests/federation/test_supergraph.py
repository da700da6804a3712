"""The gateway composed into a supergraph by Apollo Gateway (@apollo/gateway from npm, run with
Node.js), beside a second subgraph built with @apollo/subgraph that extends Product with a
shipping estimate (shipping.mjs): queries that span both subgraphs get the right data, and
the products a plan hands to the gateway's `_entities` cost one batched catalog call
(issue 21, point 6)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import node_with
from tests.federation.conftest import NodeServer
from tests.harness import Gateway, Services, http, token

FREE_FROM = 50_000  # shipping.mjs's rule


def estimate(product: dict[str, Any]) -> dict[str, Any]:
    """The shipping estimate shipping.mjs makes of the price and weight it @requires."""
    weight = product["weight_grams"]
    amount = 0 if product["price_cents"] >= FREE_FROM else 499 + math.ceil(weight / 100) * 10
    return {"amount": amount, "currency": product["currency"], "days": 5 if weight > 2000 else 2}


@pytest.fixture(scope="module")
def supergraph(subgraph: Gateway, ftmp: Path) -> Iterator[str]:
    node = node_with("@apollo/gateway", "@apollo/server", "@apollo/subgraph", "graphql")
    shipping = NodeServer(node, "shipping.mjs", [], ftmp)
    try:
        # IntrospectAndCompose reads both subgraphs' `_service { sdl }` and composes them.
        router = NodeServer(node, "supergraph.mjs", [f"gateway={subgraph.url}/graphql",
                                                      f"shipping={shipping.url}"], ftmp)
        try:
            yield router.url
        finally:
            router.stop()
    finally:
        shipping.stop()


def through(supergraph: str, query: str, variables: dict[str, Any] | None = None,
            user: str | None = None, scope: str = "") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token(user, scope)}"} if user else {}
    status, _, body = http("POST", supergraph, {"query": query, "variables": variables or {}},
                           headers, timeout=30)
    assert status == 200, body
    return dict(body)


def catalog(services: Services, ids: list[str]) -> dict[str, dict[str, Any]]:
    _, _, body = http("GET", services.url("catalog") + f"/products?ids={','.join(ids)}")
    return {p["id"]: p for p in body["items"]}


def test_products_named_by_the_other_subgraph_cost_one_catalog_call(
        supergraph: str, fservices: Services) -> None:
    ids = ["p41", "p42", "p43", "p44", "p45", "p46"]
    expected = catalog(fservices, ids)
    fservices.reset_stats()
    body = through(supergraph, """query($ids: [ID!]!) { shippable(ids: $ids) {
        id name price { amount currency } category { id name }
        shippingEstimate { amount currency days } } }""", {"ids": ids})
    assert "errors" not in body, body
    products = body["data"]["shippable"]
    assert [p["id"] for p in products] == ids
    for product in products:
        source = expected[product["id"]]
        # From the gateway, through `_entities`:
        assert product["name"] == source["name"]
        assert product["price"] == {"amount": source["price_cents"],
                                    "currency": source["currency"]}
        assert product["category"]["id"] == source["category_id"]
        # From the shipping subgraph, made of the price and weight the gateway gave it:
        assert product["shippingEstimate"] == estimate(source)
    assert {e["amount"] == 0 for e in (p["shippingEstimate"] for p in products)} == {
        True, False}, "the sample should have free and paid shipping"
    # Six representations, one batched catalog call; their categories, one more.
    stats = fservices.all_stats()
    assert stats["catalog"]["requests"] == {"GET /products": 1, "GET /categories": 1}, stats
    assert stats["catalog"]["items"]["GET /products"] == len(ids)
    assert all(not stats[name]["requests"] for name in ("users", "reviews", "orders"))


def test_a_query_from_the_gateway_s_root_gets_the_other_subgraph_s_fields(
        supergraph: str, fservices: Services) -> None:
    fservices.reset_stats()
    body = through(supergraph, """{ topProducts(first: 4) {
        id name weightGrams shippingEstimate { amount days } } }""")
    assert "errors" not in body, body
    top = body["data"]["topProducts"]
    assert len(top) == 4
    expected = catalog(fservices, [p["id"] for p in top])
    for product in top:
        assert product["weightGrams"] == expected[product["id"]]["weight_grams"]
        assert product["shippingEstimate"] == {
            k: v for k, v in estimate(expected[product["id"]]).items() if k != "currency"}
    # The price and weight the estimate requires came with the listing: no `_entities` call
    # back to the gateway, so the catalog was called once (and once more by this test).
    assert fservices.stats("catalog")["requests"] == {"GET /products": 2}


def test_orders_resolved_for_the_other_subgraph_keep_their_permissions(
        supergraph: str, fservices: Services) -> None:
    _, _, mine = http("GET", fservices.url("orders") + "/orders?user_id=u51&first=1")
    _, _, theirs = http("GET", fservices.url("orders") + "/orders?user_id=u52&first=1")
    own, other = mine["items"][0]["id"], theirs["items"][0]["id"]
    query = "query($ids: [ID!]!) { tracking(orderIds: $ids) { id status trackingNumber } }"
    ids = {"ids": [own, other]}

    anonymous = through(supergraph, query, ids)
    assert anonymous["data"]["tracking"] == [None, None]
    assert {e["extensions"]["code"] for e in anonymous["errors"]} == {"UNAUTHENTICATED"}
    # The router passes the client's token on (supergraph.mjs): the owner reads their own
    # order; someone else's reads as if it did not exist.
    owner = through(supergraph, query, ids, user="u51", scope="read:orders")
    assert owner["data"]["tracking"][0] == {
        "id": own, "status": mine["items"][0]["status"], "trackingNumber": f"TRK-{own}"}
    assert owner["data"]["tracking"][1] is None
