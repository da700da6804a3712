"""The benchmark's workloads: which operation each request sends, with which variables.

Variables rotate over the seed data so that a cold run really misses every cache, and each
request's choice is a pure function of its index, so runs are comparable.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUERIES = Path(__file__).resolve().parent / "queries"
PRODUCTS = 5000  # scale 1
CATEGORIES = 50
USERS = 1000

Request = tuple[str, dict[str, Any] | None, dict[str, str]]  # query, variables, headers


def _query(name: str) -> str:
    return (QUERIES / f"{name}.graphql").read_text()


DEEP = _query("deep")
PRODUCT_PAGE = _query("product_page")
CATEGORY_LISTING = _query("category_listing")
PLACE_ORDER = _query("place_order")


def deep(i: int) -> Request:
    return DEEP, None, {}


def product_page(i: int) -> Request:
    # A stride coprime with 5,000 walks every product before repeating one.
    return PRODUCT_PAGE, {"id": f"p{i * 7919 % PRODUCTS + 1}"}, {}


def category_listing(i: int) -> Request:
    return CATEGORY_LISTING, {"id": f"c{i % CATEGORIES + 1}"}, {}


def place_order(i: int) -> Request:
    line = {"productId": f"p{i * 104729 % PRODUCTS + 1}", "quantity": 1}
    variables = {"input": {"items": [line], "idempotencyKey": f"bench-{uuid.uuid4()}"}}
    return PLACE_ORDER, variables, {"X-User-Id": f"u{i % USERS + 1}"}


USER_LOOKUP = "query User($id: ID!) { user(id: $id) { id name } }"
TYPENAME = "{ __typename }"
PRODUCT = "query Product($id: ID!) { product(id: $id) { id name } }"


# The same selection of a product, as a query's root field and under a mutation's payload
# (bench/mutations.py): the product, its rating, its newest reviews and their authors.
REVIEWED = ("id name averageRating reviewCount "
            "reviews(first: 5) { id rating body author { id name } }")
# A larger one: about 140 objects, 6 upstream calls as a query (the deep query's shape).
REVIEWED_DEEP = ("id name price { amount currency } inStock category { id name } "
                 "reviews(first: 10) { id rating body author { id username "
                 "reviews(first: 3) { id rating product { id name inStock "
                 "reviews(first: 2) { id author { id name } } } } } }")


def _reviewed_query(selection: str) -> str:
    return f"query Reviewed($id: ID!) {{ product(id: $id) {{ {selection} }} }}"


def _add_review(selection: str) -> str:
    return ("mutation AddReview($input: AddReviewInput!) { addReview(input: $input) { "
            f"review {{ id product {{ {selection} }} }} errors {{ code }} }} }}")


REVIEWED_QUERY, ADD_REVIEW = _reviewed_query(REVIEWED), _add_review(REVIEWED)
REVIEWED_DEEP_QUERY, ADD_REVIEW_DEEP = _reviewed_query(REVIEWED_DEEP), _add_review(REVIEWED_DEEP)


def _reviewed_product(i: int) -> str:
    return f"p{i * 7919 % PRODUCTS + 1}"


def reviewed_query(i: int) -> Request:
    return REVIEWED_QUERY, {"id": _reviewed_product(i)}, {"X-User-Id": f"u{i % USERS + 1}"}


def _review_input(i: int) -> dict[str, Any]:
    return {"input": {"productId": _reviewed_product(i), "rating": i % 5 + 1,
                      "body": f"Bench review {i}."}}


def add_review(i: int) -> Request:
    """A review written (the reviews service keeps it, in memory), then its product read."""
    return ADD_REVIEW, _review_input(i), {"X-User-Id": f"u{i % USERS + 1}"}


def reviewed_deep_query(i: int) -> Request:
    return REVIEWED_DEEP_QUERY, {"id": _reviewed_product(i)}, {"X-User-Id": f"u{i % USERS + 1}"}


def add_review_deep(i: int) -> Request:
    return ADD_REVIEW_DEEP, _review_input(i), {"X-User-Id": f"u{i % USERS + 1}"}


def typename(i: int) -> Request:
    return TYPENAME, None, {}


def product(i: int) -> Request:
    return PRODUCT, {"id": f"p{i * 7919 % PRODUCTS + 1}"}, {}


def user_lookup(i: int) -> Request:
    return USER_LOOKUP, {"id": f"u{i % USERS + 1}"}, {}


def mix(i: int) -> Request:
    """5% placeOrder; the rest product pages, listings and deep queries, 60/25/10."""
    slot = i % 20
    if slot == 0:
        return place_order(i)
    if slot <= 12:
        return product_page(i)
    if slot <= 17:
        return category_listing(i)
    return deep(i)


@dataclass(frozen=True)
class Workload:
    name: str
    make: Callable[[int], Request]
    description: str
    writes: bool = False


WORKLOADS = {
    w.name: w
    for w in (
        Workload("deep", deep, "the deep query of bench/queries/deep.graphql"),
        Workload("product_page", product_page,
                 "one product, its stock, category, rating and 10 reviews with authors"),
        Workload("category_listing", category_listing,
                 "a category's first 20 products with price, stock and rating"),
        Workload("mix", mix,
                 "60% product pages, 25% listings, 10% deep queries, 5% placeOrder",
                 writes=True),
    )
}
# Workloads of the other benchmarks (bench/resilience.py), not of the main matrix.
EXTRA_WORKLOADS = {
    w.name: w
    for w in (Workload("user_lookup", user_lookup, "one user by id (one users call)"),
              Workload("typename", typename, "`{ __typename }`: no upstream call"),
              Workload("product", product, "one product's id and name (one catalog call)"),
              Workload("reviewed_query", reviewed_query,
                       "a product, its rating and 5 reviews with authors (3 calls)"),
              Workload("add_review", add_review,
                       "addReview, its payload the product as `reviewed_query` reads it",
                       writes=True),
              Workload("reviewed_deep_query", reviewed_deep_query,
                       "a product, 10 reviews, their authors' reviews and those products' "
                       "(6 calls)"),
              Workload("add_review_deep", add_review_deep,
                       "addReview, its payload the product as `reviewed_deep_query` reads it",
                       writes=True))
}

# Fields whose resolution is an upstream lookup of its own in a gateway without batching.
LOOKUP_FIELDS = frozenset({"inStock", "inventory"})


def unbatched_lookups(data: Any, root: bool = True) -> int:
    """Upstream lookups a gateway with no batching would make for this result.

    One per root field, one per object-valued field that names an entity (it has an id), one
    per list-valued field (a list is one call by foreign key), and one per stock field.
    """
    if isinstance(data, list):
        return sum(unbatched_lookups(x, False) for x in data)
    if not isinstance(data, dict):
        return 0
    n = 0
    for key, value in data.items():
        if root or key in LOOKUP_FIELDS or isinstance(value, list) or (
            isinstance(value, dict) and "id" in value
        ):
            n += 1
        n += unbatched_lookups(value, False)
    return n
