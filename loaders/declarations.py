"""Every loader the gateway uses, declared in one place.

Batch limits are the upstream contract's (`upstreams.md`); a larger batch is split.
"""

from __future__ import annotations

from collections.abc import Mapping

from loaders.spec import BatchSpec, ListSpec, newest_first

USER = BatchSpec(
    name="user", service="users", path="/users", param="ids", limit=100,
    key_field="id", entity="User", cache="User",
)
PRODUCT = BatchSpec(
    name="product", service="catalog", path="/products", param="ids", limit=100,
    key_field="id", entity="Product", cache="Product",
)
CATEGORY = BatchSpec(
    name="category", service="catalog", path="/categories", param="ids", limit=100,
    key_field="id", entity="Category", cache="Category",
)
ORDER = BatchSpec(
    name="order", service="orders", path="/orders", param="ids", limit=100,
    key_field="id", entity="Order", cache="Order",
)
STOCK = BatchSpec(
    name="stock", service="inventory", path="/inventory/query", param="skus", limit=200,
    key_field="sku", entity="Stock", cache="Stock", method="POST",
)
REVIEWS_BY_PRODUCT = BatchSpec(
    name="reviews_by_product", service="reviews", path="/reviews", param="product_ids",
    limit=100, key_field="product_id", entity="Review", many=True, sort=newest_first,
    cache="Product.reviews",
)
REVIEWS_BY_AUTHOR = BatchSpec(
    name="reviews_by_author", service="reviews", path="/reviews", param="author_ids",
    limit=100, key_field="author_id", entity="Review", many=True, sort=newest_first,
    cache="User.reviews",
)

# Reviews are read by id when an event names one: its lists are found from the review
# itself (loaders/entities.py); and by a federation router's `_entities` (uncached, with no
# cache hint). No field of the graph reads it, so it is not in ALL.
REVIEW = BatchSpec(
    name="review", service="reviews", path="/reviews", param="ids", limit=100,
    key_field="id", entity="Review",
)


def _page(first: int, after: str | None) -> dict[str, str]:
    params = {"first": str(first)}
    if after is not None:
        params["after"] = after
    return params


def _top_products(first: int) -> tuple[str, Mapping[str, str]]:
    return "/products", {"sort": "top", "first": str(first)}


def _category_products(key: tuple[str, int, str | None]) -> tuple[str, Mapping[str, str]]:
    category_id, first, after = key
    return "/products", {"category_id": category_id, **_page(first, after)}


def _user_orders(key: tuple[str, int, str | None]) -> tuple[str, Mapping[str, str]]:
    user_id, first, after = key
    return "/orders", {"user_id": user_id, **_page(first, after)}


def _recommendations(key: tuple[str, int]) -> tuple[str, Mapping[str, str]]:
    user_id, limit = key
    return f"/recommendations/{user_id}", {"limit": str(limit)}


def _all_categories(_key: str) -> tuple[str, Mapping[str, str]]:
    return "/categories", {}


TOP_PRODUCTS = ListSpec(
    name="top_products", service="catalog", entity="Product", request=_top_products,
    primes=PRODUCT, cache="Query.topProducts",
)
CATEGORY_PRODUCTS = ListSpec(
    name="category_products", service="catalog", entity="Product",
    request=_category_products, primes=PRODUCT, bad_request_field="after",
    cache="Category.products",
)
USER_ORDERS = ListSpec(
    name="user_orders", service="orders", entity="Order", request=_user_orders, primes=ORDER,
    bad_request_field="after", cache="User.orders",
)
RECOMMENDATIONS = ListSpec(
    name="recommendations", service="recommendations", entity="Product",
    request=_recommendations, cache="User.recommendations",
    route="/recommendations/{user_id}", envelope="product_ids",
)
ALL_CATEGORIES = ListSpec(
    name="all_categories", service="catalog", entity="Category", request=_all_categories,
    primes=CATEGORY, cache="Query.categories",
)


ALL: tuple[BatchSpec | ListSpec, ...] = (
    USER, PRODUCT, CATEGORY, ORDER, STOCK, REVIEWS_BY_PRODUCT, REVIEWS_BY_AUTHOR,
    TOP_PRODUCTS, CATEGORY_PRODUCTS, USER_ORDERS, RECOMMENDATIONS, ALL_CATEGORIES,
)
BY_NAME: dict[str, BatchSpec | ListSpec] = {spec.name: spec for spec in ALL}
