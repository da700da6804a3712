"""Field resolvers of the entity types. Each takes the upstream item it belongs to (`root`)
and returns upstream items; the schema in `schema/types.py` declares their GraphQL types.
Every lookup goes through the request's loaders, so sibling fields batch together. A
resolver that only hands on a loader's answer returns it as the loaders give it (the value
when it is at hand, else its future, or a `Then` of it) rather than awaiting it: no
coroutine per call on lists of thousands."""

from __future__ import annotations

from collections.abc import Awaitable

from strawberry import UNSET

from app.execution.context import Info
from loaders.declarations import (
    CATEGORY,
    CATEGORY_PRODUCTS,
    PRODUCT,
    RECOMMENDATIONS,
    REVIEWS_BY_AUTHOR,
    REVIEWS_BY_PRODUCT,
    STOCK,
    USER,
    USER_ORDERS,
)
from loaders.spec import Item
from loaders.then import Then
from resolvers.pagination import check_first, page

MAX_RECOMMENDATIONS = 50  # the service's own limit


def money(cents: int, currency: str) -> Item:
    return {"amount": cents, "currency": currency}


# -- User --------------------------------------------------------------------------------------
def user_reviews(root: Item, info: Info, first: int | None = 10) -> list[Item] | Then:
    n = check_first(first, 10)
    return info.context.loaders.then(REVIEWS_BY_AUTHOR, root["id"], lambda reviews: reviews[:n])


def user_orders(
    root: Item, info: Info, first: int | None = 10, after: str | None = UNSET
) -> Item | Then:
    return page(info.context.loaders, USER_ORDERS, root["id"], first, after, 10)


async def user_recommendations(root: Item, info: Info, first: int | None = 5) -> list[Item]:
    n = check_first(first, 5, MAX_RECOMMENDATIONS)
    if n == 0:
        return []
    loaders = info.context.loaders
    body = await loaders.load(RECOMMENDATIONS, (root["id"], n))
    ids = list(dict.fromkeys(body["product_ids"]))[:n]
    # The service may name products that no longer exist: those are dropped, not nulls.
    return [p for p in await loaders.load_many(PRODUCT, ids) if p is not None]


# -- Product -----------------------------------------------------------------------------------
def product_price(root: Item) -> Item:
    return money(root["price_cents"], root["currency"])


def product_category(root: Item, info: Info) -> Item | Awaitable[Item | None] | None:
    category_id = root.get("category_id")
    if category_id is None:
        return None
    return info.context.loaders.get(CATEGORY, category_id)


LOW_STOCK = 5  # units; below it, stock may run out any second


def _stock_hint(info: Info, stock: Item | None) -> None:
    # A dynamic cache hint: the last few units may sell any moment, so a response that shows
    # low stock may be cached for a second at most, not the schema's 5.
    if stock is not None and 0 < stock["quantity"] <= LOW_STOCK:
        info.context.policy.restrict(max_age=1)


def product_inventory(root: Item, info: Info) -> Item | Then | None:
    def done(stock: Item | None) -> Item | None:
        _stock_hint(info, stock)
        return stock

    return info.context.loaders.then(STOCK, root["sku"], done)


def product_in_stock(root: Item, info: Info) -> bool | Then | None:
    def done(stock: Item | None) -> bool | None:
        _stock_hint(info, stock)
        return None if stock is None else bool(stock["in_stock"])

    return info.context.loaders.then(STOCK, root["sku"], done)


def product_average_rating(root: Item) -> float | None:
    # The catalog keeps the aggregate of the product's reviews current (the reviews service
    # updates it on every new review), so no reviews call is needed for it.
    return root["rating_avg"] if root["rating_count"] else None


def product_review_count(root: Item) -> int:
    return int(root["rating_count"])


def product_reviews(root: Item, info: Info, first: int | None = 10) -> list[Item] | Then:
    n = check_first(first, 10)
    return info.context.loaders.then(REVIEWS_BY_PRODUCT, root["id"], lambda reviews: reviews[:n])


# -- Category ----------------------------------------------------------------------------------
def category_parent(root: Item, info: Info) -> Item | Awaitable[Item | None] | None:
    parent_id = root.get("parent_id")
    if parent_id is None:
        return None
    return info.context.loaders.get(CATEGORY, parent_id)


def category_products(
    root: Item, info: Info, first: int | None = 20, after: str | None = UNSET
) -> Item | Then:
    return page(info.context.loaders, CATEGORY_PRODUCTS, root["id"], first, after, 20)


# -- Review ------------------------------------------------------------------------------------
def review_author(root: Item, info: Info) -> Item | Awaitable[Item | None] | None:
    return info.context.loaders.get(USER, root["author_id"])


def review_product(root: Item, info: Info) -> Item | Awaitable[Item | None] | None:
    return info.context.loaders.get(PRODUCT, root["product_id"])


# -- Order -------------------------------------------------------------------------------------
def order_items(root: Item) -> list[Item]:
    # Line items carry no currency of their own: it is the order's.
    return [{**item, "currency": root["currency"]} for item in root["items"]]


def order_total(root: Item) -> Item:
    return money(root["total_cents"], root["currency"])


def order_customer(root: Item, info: Info) -> Item | Awaitable[Item | None] | None:
    return info.context.loaders.get(USER, root["user_id"])


def order_item_product(root: Item, info: Info) -> Item | Awaitable[Item | None] | None:
    return info.context.loaders.get(PRODUCT, root["product_id"])


def order_item_unit_price(root: Item) -> Item:
    return money(root["unit_price_cents"], root["currency"])


