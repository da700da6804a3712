"""Subscription fields: what each one watches. A subscribe resolver runs once, when a client
subscribes (after the field's permission classes): it checks its arguments and returns a
`Watch`, the change events that concern the subscription and how to read the entity each
names. The subscription hub (`app/execution/subscriptions.py`) does the rest: at each such
event it resolves the subscriber's selection on that entity, like a query."""

from __future__ import annotations

import strawberry

from app.core.errors import GatewayError
from app.execution.context import Info
from app.execution.subscriptions import Watch
from loaders.declarations import ORDER, PRODUCT, REVIEW, STOCK
from loaders.spec import Item


async def _product(info: Info, product_id: str) -> Item:
    product: Item | None = await info.context.loaders.load(PRODUCT, product_id)
    if product is None:
        raise GatewayError(f"There is no product {product_id}", code="NOT_FOUND")
    return product


async def stock_changed(info: Info, product_id: strawberry.ID) -> Watch:
    # Stock events name the sku: the product's, read once here.
    product = await _product(info, product_id)
    return Watch("Stock", product["sku"], STOCK)


async def product_changed(info: Info, id: strawberry.ID) -> Watch:
    await _product(info, id)
    return Watch("Product", id, PRODUCT)


async def review_added(info: Info, product_id: strawberry.ID) -> Watch:
    await _product(info, product_id)
    # A review event names the review: its product is read from it, once per event.
    return Watch("Review", product_id, REVIEW, route="product_id", ops=frozenset({"create"}))


async def order_updated(info: Info) -> Watch:
    # The caller's own orders, admins included (the field's permission wants read:orders).
    return Watch("Order", info.context.require_user(), ORDER, route="user_id")
