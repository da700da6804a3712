"""No N+1: a query costs one upstream request per service per level of the query.

The counts come from the reference services' `/_stats`. Each expected figure is written down
and explained, and also derived from the response itself (how many distinct ids each level
asks for that an earlier level has not already loaded), so a change in the seed data shows
up as a clear mismatch rather than a mystery.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from services.seed import Dataset
from tests.conftest import GQL, QUERIES, data_of
from tests.harness import ROOT, Services

DEEP = (QUERIES / "deep.graphql").read_text()


def requests_of(services: Services) -> dict[str, dict[str, int]]:
    return {name: stats["requests"] for name, stats in services.all_stats().items()}


def items_of(services: Services) -> dict[str, dict[str, int]]:
    return {name: stats["items"] for name, stats in services.all_stats().items()}


def batches(n: int, limit: int) -> int:
    return math.ceil(n / limit)


def deep_levels(data: dict[str, Any]) -> dict[str, int]:
    """Distinct ids each level of the deep query must fetch, given what earlier levels loaded.

    A product listed by topProducts is already known by id (the listing primes the product
    loader), and a product's reviews or stock already fetched at level 2 are not fetched again
    at level 6: the loaders dedupe within the request.
    """
    top = data["topProducts"]
    top_ids = {p["id"] for p in top}
    l2_reviews = [r for p in top for r in p["reviews"]]
    l3_authors = {r["author"]["id"] for r in l2_reviews}
    l4_reviews = [r for r in l2_reviews for r in r["author"]["reviews"]]
    l5_products = {r["product"]["id"] for r in l4_reviews}
    l5_new = l5_products - top_ids
    l6_reviews = [
        r for r in l4_reviews for r in r["product"]["reviews"]
    ]
    l7_authors = {r["author"]["id"] for r in l6_reviews}
    return {
        "top": len(top_ids),
        "l3_authors": len(l3_authors),
        "l5_new_products": len(l5_new),
        "l7_new_authors": len(l7_authors - l3_authors),
    }


async def test_deep_query_costs_one_request_per_service_per_level(
    gql: GQL, clean_services: Services
) -> None:
    data = data_of(await gql(DEEP))
    seen = requests_of(clean_services)
    lv = deep_levels(data)

    # Derived: level by level, one batch per service, split only at a batch limit.
    derived = {
        # L1 topProducts + L5 the authors' reviewed products that L1 did not list.
        "catalog": {
            "GET /products": 1 + batches(lv["l5_new_products"], 100),
            # L2 the ten products' categories, all in one call.
            "GET /categories": 1,
        },
        # L2 stock of the ten products; L6 stock of the L5 products not seen at L2.
        "inventory": {"POST /inventory/query": 1 + batches(lv["l5_new_products"], 200)},
        # L2 reviews by product; L4 reviews by author; L6 reviews of the new L5 products.
        "reviews": {
            "GET /reviews": 1
            + batches(lv["l3_authors"], 100)
            + batches(lv["l5_new_products"], 100)
        },
        # L3 the review authors; L7 the authors of L6 reviews not already loaded at L3.
        "users": {
            "GET /users": batches(lv["l3_authors"], 100) + batches(lv["l7_new_authors"], 100)
        },
        "orders": {},
        "recommendations": {},
    }
    assert seen == derived

    # Written down for seed 42, scale 1 (levels: 10 top products, their 19 distinct review
    # authors, 53 further products those authors reviewed, 52 further authors): 7 levels,
    # 10 requests, none split because no level reaches a batch limit.
    #   catalog  GET /products   L1 topProducts, L5 the 53 reviewed products     = 2
    #   catalog  GET /categories L2 the top products' categories                 = 1
    #   inventory                L2 stock of 10 skus, L6 stock of 53 skus        = 2
    #   reviews  GET /reviews    L2 by 10 products, L4 by 19 authors, L6 by 53   = 3
    #   users    GET /users      L3 19 authors, L7 52 authors                    = 2
    # An unbatched gateway would make one lookup per entity reference: hundreds.
    assert lv == {"top": 10, "l3_authors": 19, "l5_new_products": 53, "l7_new_authors": 52}
    assert seen == {
        "catalog": {"GET /products": 2, "GET /categories": 1},
        "inventory": {"POST /inventory/query": 2},
        "reviews": {"GET /reviews": 3},
        "users": {"GET /users": 2},
        "orders": {},
        "recommendations": {},
    }


async def test_deep_query_dedupes_ids(gql: GQL, clean_services: Services) -> None:
    data = data_of(await gql(DEEP))
    items = items_of(clean_services)
    lv = deep_levels(data)
    # Every id is asked for once per request, however many times the result names it.
    assert items["users"]["GET /users"] == lv["l3_authors"] + lv["l7_new_authors"]
    assert items["catalog"]["GET /products"] == lv["l5_new_products"]


async def test_hundred_products_with_reviews_and_authors(
    gql: GQL, clean_services: Services
) -> None:
    ids = [f"p{i}" for i in range(1, 101)]
    query = """query($ids: [ID!]!) {
      products(ids: $ids) { id name reviews { id rating author { id name } } }
    }"""
    data = data_of(await gql(query, {"ids": ids}))
    assert [p["id"] for p in data["products"]] == ids
    authors = {r["author"]["id"] for p in data["products"] for r in p["reviews"]}
    seen = requests_of(clean_services)
    # One products call for 100 ids, one reviews call for their 100 product ids, and the
    # distinct authors in calls of at most 100 ids: more only because of the batch limit.
    assert seen["catalog"] == {"GET /products": 1}
    assert seen["reviews"] == {"GET /reviews": 1}
    assert seen["users"] == {"GET /users": batches(len(authors), 100)}
    assert items_of(clean_services)["users"]["GET /users"] == len(authors)
    assert seen["inventory"] == seen["orders"] == seen["recommendations"] == {}


async def test_batches_split_at_the_upstream_limit(gql: GQL, clean_services: Services) -> None:
    ids = [f"p{i}" for i in range(1, 251)]
    data = data_of(await gql('query($ids: [ID!]!) { products(ids: $ids) { id inStock } }',
                             {"ids": ids + ids[:50]}))
    assert [p["id"] for p in data["products"]] == ids + ids[:50]
    stats = clean_services.all_stats()
    # 250 distinct ids: catalog takes at most 100 per call (3 calls), inventory 200 (2 calls).
    assert stats["catalog"]["requests"] == {"GET /products": 3}
    assert stats["catalog"]["items"] == {"GET /products": 250}
    assert stats["inventory"]["requests"] == {"POST /inventory/query": 2}
    assert stats["inventory"]["items"] == {"POST /inventory/query": 250}


async def test_listings_fan_out_deduped_and_bounded(gql: GQL, clean_services: Services) -> None:
    # A category's products have no batch endpoint: one call per distinct (category, page),
    # at most FANOUT_CONCURRENCY (8) at once. The two aliases ask for the same 50 pages.
    clean_services.set_faults("catalog", latency_ms=100)
    query = """{ a: categories { id products(first: 2) { edges { node { id } } } }
                 b: categories { id products(first: 2) { edges { node { id } } } } }"""
    loop = asyncio.get_running_loop()
    started = loop.time()
    data = data_of(await gql(query))
    elapsed = loop.time() - started
    assert len(data["a"]) == 50 and data["a"] == data["b"]
    stats = clean_services.stats("catalog")
    assert stats["requests"] == {"GET /categories": 1, "GET /products": 50}
    # One 100 ms round for the categories, then 50 calls of 100 ms, 8 at a time: at least
    # seven rounds more, and far fewer than fifty sequential ones.
    assert elapsed >= 0.1 + 7 * 0.1
    assert elapsed < 51 * 0.1 / 2


async def test_recommendations_deduped(gql: GQL, clean_services: Services) -> None:
    query = """{ me { a: recommendations(first: 3) { id } b: recommendations(first: 3) { id } } }"""
    data = data_of(await gql(query, user="u3"))
    assert data["me"]["a"] == data["me"]["b"]
    assert clean_services.stats("recommendations")["requests"] == {
        "GET /recommendations/{user_id}": 1
    }


async def test_cached_entities_do_not_split_the_next_level(
    gql: GQL, clean_services: Services, dataset: Dataset
) -> None:
    # A product already loaded at the root resolves from the request's cache; its stock
    # must still be fetched in the same batch as the stock of its uncached siblings.
    reviews = sorted((r for r in dataset.reviews.values() if r["author_id"] == "u1"),
                     key=lambda r: (r["created_at"], r["id"]), reverse=True)
    known = reviews[-1]["product_id"]
    query = """query($p: [ID!]!) { products(ids: $p) { id }
      user(id: "u1") { reviews(first: 50) { product { id inStock } } } }"""
    data = data_of(await gql(query, {"p": [known]}))
    assert known in {r["product"]["id"] for r in data["user"]["reviews"]}
    stats = clean_services.all_stats()
    assert stats["inventory"]["requests"] == {"POST /inventory/query": 1}
    assert stats["catalog"]["requests"] == {"GET /products": 2}  # root, then the reviews' others


# Seven levels on one branch (products, their reviews, the authors, the authors' reviews,
# those reviews' products, their reviews, those authors), and stock beside it at level 2.
BRANCHES = """{ topProducts(first: 3) { inStock reviews(first: 2) { author {
  reviews(first: 2) { product { reviews(first: 1) { author { name } } } } } } } }"""


async def test_a_slow_service_holds_up_only_the_fields_under_it(
    gql: GQL, clean_services: Services
) -> None:
    # No level barrier: stock (level 2) is slow, and the branch beside it runs its levels 3
    # to 7 meanwhile. With a barrier, every call after level 2 would start after the stock.
    clean_services.set_faults("inventory", latency_ms=600)
    body = await gql(BRANCHES, headers={"X-Gateway-Debug": "1"})
    data = data_of(body)
    assert all(p["inStock"] in (True, False) for p in data["topProducts"])
    calls = body["extensions"]["debug"]["upstream"]
    [stock] = [c for c in calls if c["service"] == "inventory"]
    others = [c for c in calls if c["service"] != "inventory"]
    # Catalog twice (levels 1, 5), reviews three times (2, 4, 6), users twice (3, 7).
    assert sorted(c["service"] for c in others) == [
        "catalog", "catalog", "reviews", "reviews", "reviews", "users", "users"]
    stock_end = stock["startMs"] + stock["durationMs"]
    assert all(c["startMs"] + c["durationMs"] < stock_end for c in others), calls
    # ... and each level's calls still batch: one call per service per level.
    assert requests_of(clean_services) == {
        "catalog": {"GET /products": 2},
        "inventory": {"POST /inventory/query": 1},
        "reviews": {"GET /reviews": 3},
        "users": {"GET /users": 2},
        "orders": {}, "recommendations": {},
    }


async def test_the_readmes_first_query_costs_ten_requests(
    gql: GQL, clean_services: Services
) -> None:
    # The README's "A first query" (with `inventory { inStock }` for the deprecated
    # `inStock`) costs what the deep query costs: one request per service per level.
    readme = (ROOT / "README.md").read_text()
    query = readme.split("## A first query", 1)[1].split("```graphql\n", 1)[1].split("```")[0]
    data_of(await gql(query))
    assert sum(sum(r.values()) for r in requests_of(clean_services).values()) == 10
