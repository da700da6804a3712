"""Mutations: they call the services' write routes, put the services' business refusals
(`Refused`, classified by the upstream client from the tables below) in the payload's
`errors`, and report what they changed (`RequestContext.written`): every replica's cache and
the request's own loaders then read the write. Transport failures are not handled here: they
stay GraphQL errors classified by the client, which also decides whether a write may be sent
again (only `placeOrder`'s, which carries an idempotency key) and reports a write that may
have been carried out as UPSTREAM_OUTCOME_UNKNOWN. Once a service has answered a write, the
answer is the client's, whatever happens after (README: Nothing lost)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence

import orjson
import strawberry

from app.core.errors import Refused
from app.execution.context import Info
from loaders.declarations import ORDER, PRODUCT
from loaders.spec import Item
from resolvers.inputs import AddReviewInput, PlaceOrderInput

log = logging.getLogger("gateway.mutations")

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


def order_problem(body: object) -> str | None:
    """What is off-contract in an order the orders service answered, as far as the gateway
    relies on it (the client then reports the write's outcome as unknown)."""
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        return "an order without a string `id`"
    items = body.get("items")
    if not isinstance(items, list) or not all(
            isinstance(line, dict) and isinstance(line.get("sku"), str) for line in items):
        return "an order without its lines' `sku`s"
    return None


def review_problem(body: object) -> str | None:
    """The same for a review."""
    if not isinstance(body, dict) or not all(
            isinstance(body.get(f), str) for f in ("id", "product_id")):
        return "a review without a string `id` and `product_id`"
    return None


def order_key(user_id: str, key: str) -> str:
    """The Idempotency-Key the orders service gets for a client's `idempotencyKey`: the
    client's key scoped to the caller, so that two callers' equal keys are two orders, and
    no caller can take up (or learn, by an IDEMPOTENCY_CONFLICT) a key another one used.
    Every replica derives the same key, so a retry through any of them is recognised."""
    return "gw1:" + hashlib.sha256(orjson.dumps([user_id, key])).hexdigest()


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
        # With its key, the client may send it again (and does, on a transient failure).
        order: Item = await ctx.upstream.request(
            "orders", "POST", "/orders", json=body,
            headers={"Idempotency-Key": order_key(user_id, input.idempotency_key)},
            refusals=PLACE_ORDER_REFUSALS, check=order_problem,
        )
    except Refused as refused:
        return {"order": None, "errors": [refused.payload()]}
    await _committed(info, lambda: _order_changes(order))
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
                                                 route="/orders/{id}/cancel",
                                                 refusals=CANCEL_ORDER_REFUSALS,
                                                 check=order_problem)
    except Refused as refused:
        return {"order": None, "errors": [refused.payload()]}
    await _committed(info, lambda: _order_changes(order))
    return {"order": order, "errors": []}


def _order_changes(order: Item) -> list[tuple[str, str, Item | None]]:
    # The order, and the stock of each of its lines.
    return ([("Order", order["id"], order)]
            + [("Stock", line["sku"], None) for line in order["items"]])


async def _committed(info: Info,
                     changes: Callable[[], Sequence[tuple[str, str, Item | None]]]) -> None:
    """A service carried out a write: report what it changed (`changes`, read from its
    answer), so that caches evict it. Nothing that fails here may turn the committed write
    into an error for the client, who would then write it again: the failure is logged, and
    the stale entries expire by their max-age."""
    try:
        await info.context.written(changes())
    except Exception:
        log.exception("a committed write's cache evictions failed; the write stands")


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
        # No idempotency key: the client sends it at most once (again only if no connection
        # could be opened), and reports UPSTREAM_OUTCOME_UNKNOWN when it went out and may
        # have been carried out.
        review: Item = await ctx.upstream.request("reviews", "POST", "/reviews", json=body,
                                                  refusals=ADD_REVIEW_REFUSALS,
                                                  check=review_problem)
    except Refused as refused:
        return {"review": None, "errors": [refused.payload()]}
    # The review's lists, and its product, whose rating changed.
    await _committed(info, lambda: [("Review", review["id"], review),
                                    ("Product", review["product_id"], None)])
    return {"review": review, "errors": []}
