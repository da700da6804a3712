"""Mutations: they call the services' write routes, turn the services' business refusals into
the payload's `errors`, and update the request's loaders so the same request reads its write.
Transport failures are not handled here: they stay GraphQL errors classified by the client."""

from __future__ import annotations

from collections.abc import Mapping

import strawberry

from app.execution.context import Info
from app.upstream.failures import UpstreamError
from loaders.declarations import (
    ORDER,
    PRODUCT,
    REVIEWS_BY_AUTHOR,
    REVIEWS_BY_PRODUCT,
    STOCK,
    USER_ORDERS,
)
from loaders.spec import Item
from resolvers.inputs import AddReviewInput, PlaceOrderInput

MAX_IDEMPOTENCY_KEY = 200
MAX_REVIEW_BODY = 10_000

# A service's refusal (its error code) -> the payload's (code, field).
PLACE_ORDER_REFUSALS = {
    "INSUFFICIENT_STOCK": ("INSUFFICIENT_STOCK", "items"),
    "IDEMPOTENCY_CONFLICT": ("IDEMPOTENCY_CONFLICT", "idempotencyKey"),
    "BAD_INPUT": ("BAD_USER_INPUT", "items"),
}
CANCEL_ORDER_REFUSALS = {
    "ALREADY_SHIPPED": ("ALREADY_SHIPPED", "id"),
    "NOT_FOUND": ("NOT_FOUND", "id"),
}
ADD_REVIEW_REFUSALS = {"BAD_INPUT": ("BAD_USER_INPUT", None)}


def user_error(code: str, message: str, field: str | None = None) -> Item:
    return {"code": code, "message": message, "field": field}


REFUSAL_STATUSES = frozenset({400, 404, 409})


def refusal(err: UpstreamError, table: Mapping[str, tuple[str, str | None]]) -> Item:
    """The payload error for a service's refusal of the input (400, 404, 409); anything else
    (401/403 from the service, 429, 5xx, timeouts) stays a classified GraphQL error."""
    if err.status not in REFUSAL_STATUSES:
        raise err
    code, field = table.get(err.upstream_code or "", ("BAD_USER_INPUT", None))
    return user_error(code, err.upstream_message or str(err), field)


async def place_order(info: Info, input: PlaceOrderInput) -> Item:
    ctx = info.context
    user_id = ctx.require_user()
    errors = []
    if not input.items:
        errors.append(user_error("BAD_USER_INPUT", "An order needs at least one item", "items"))
    for i, line in enumerate(input.items):
        if line.quantity < 1:
            errors.append(
                user_error("BAD_USER_INPUT", "Quantity must be at least 1",
                           f"items.{i}.quantity")
            )
    if not (0 < len(input.idempotency_key) <= MAX_IDEMPOTENCY_KEY
            and input.idempotency_key.isprintable() and input.idempotency_key.isascii()):
        errors.append(
            user_error("BAD_USER_INPUT",
                       f"idempotencyKey must have 1 to {MAX_IDEMPOTENCY_KEY} printable "
                       "ASCII characters",
                       "idempotencyKey")
        )
    if errors:
        return {"order": None, "errors": errors}
    body = {
        "user_id": user_id,
        "items": [{"product_id": line.product_id, "quantity": line.quantity}
                  for line in input.items],
    }
    try:
        order: Item = await ctx.upstream.request(
            "orders", "POST", "/orders", json=body,
            headers={"Idempotency-Key": input.idempotency_key},
        )
    except UpstreamError as err:
        return {"order": None, "errors": [refusal(err, PLACE_ORDER_REFUSALS)]}
    await _order_written(info, order)
    return {"order": order, "errors": []}


async def cancel_order(info: Info, id: strawberry.ID) -> Item:
    ctx = info.context
    user_id = ctx.require_user()
    existing = await ctx.loaders.load(ORDER, id)
    # Someone else's order answers as if it did not exist.
    if existing is None or existing["user_id"] != user_id:
        return {"order": None, "errors": [user_error("NOT_FOUND", "No such order", "id")]}
    try:
        order: Item = await ctx.upstream.request("orders", "POST", f"/orders/{id}/cancel",
                                                 route="/orders/{id}/cancel")
    except UpstreamError as err:
        return {"order": None, "errors": [refusal(err, CANCEL_ORDER_REFUSALS)]}
    await _order_written(info, order)
    return {"order": order, "errors": []}


async def _order_written(info: Info, order: Item) -> None:
    ctx = info.context
    if ctx.invalidator is not None:
        # Before answering: once the caller has seen this write, no replica may serve the
        # stock or orders from before it.
        await ctx.invalidator.evict_many(
            [("Order", order["id"], None)]
            + [("Stock", line["sku"], None) for line in order["items"]],
            own_write=True,
        )
    loaders = ctx.loaders
    loaders.prime(ORDER, order["id"], order)
    loaders.clear(USER_ORDERS)
    for line in order["items"]:
        loaders.clear(STOCK, line["sku"])


async def add_review(info: Info, input: AddReviewInput) -> Item:
    ctx = info.context
    user_id = ctx.require_user()
    errors = []
    if not 1 <= input.rating <= 5:
        errors.append(user_error("INVALID_RATING", "Rating must be from 1 to 5", "rating"))
    if not input.body.strip() or len(input.body) > MAX_REVIEW_BODY:
        errors.append(
            user_error("BAD_USER_INPUT",
                       f"Body must be 1 to {MAX_REVIEW_BODY} characters", "body")
        )
    if errors:
        return {"review": None, "errors": errors}
    # The reviews service refuses an unknown product with a bare 400; asking the catalog
    # first gives the caller a precise NOT_FOUND on the field at fault.
    if await ctx.loaders.load(PRODUCT, input.product_id) is None:
        return {"review": None,
                "errors": [user_error("NOT_FOUND", "No such product", "productId")]}
    body = {"product_id": input.product_id, "author_id": user_id, "rating": input.rating,
            "body": input.body}
    try:
        review: Item = await ctx.upstream.request("reviews", "POST", "/reviews", json=body)
    except UpstreamError as err:
        return {"review": None, "errors": [refusal(err, ADD_REVIEW_REFUSALS)]}
    if ctx.invalidator is not None:
        # The review's lists, and its product, whose rating changed.
        await ctx.invalidator.evict_many(
            [("Review", review["id"], review), ("Product", review["product_id"], None)],
            own_write=True,
        )
    loaders = ctx.loaders
    loaders.clear(REVIEWS_BY_PRODUCT, review["product_id"])
    loaders.clear(REVIEWS_BY_AUTHOR, review["author_id"])
    loaders.clear(PRODUCT, review["product_id"])  # its rating aggregate changed
    return {"review": review, "errors": []}
