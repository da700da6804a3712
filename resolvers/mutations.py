"""Mutations: they call the services' write routes, put the services' business refusals
(`Refused`, classified by the upstream client from the tables below) in the payload's
`errors`, and report what they changed (`RequestContext.written`): every replica's cache and
the request's own loaders then read the write. Transport failures are not handled here: they
stay GraphQL errors classified by the client, which also decides whether a write may be sent
again (only `placeOrder`'s, which carries an idempotency key) and reports a write that may
have been carried out as UPSTREAM_OUTCOME_UNKNOWN. `addReview`'s idempotency key is kept by
the gateway itself (`app.security.idempotency`), since the reviews service takes none. Once
a service has answered a write, the answer is the client's, whatever happens after (README:
Nothing lost)."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

import orjson
import strawberry

from app.core.errors import GatewayError, Refused
from app.execution.context import Info
from app.security.idempotency import Claim, IdempotencyStore
from app.upstream.failures import UpstreamError
from loaders.declarations import ORDER, PRODUCT
from loaders.spec import Item
from resolvers.inputs import AddReviewInput, PlaceOrderInput

log = logging.getLogger("gateway.mutations")

MAX_IDEMPOTENCY_KEY = 200
KEY_RULE = f"idempotencyKey must have 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
MAX_REVIEW_BODY = 10_000
OUTCOME_UNKNOWN = "UPSTREAM_OUTCOME_UNKNOWN"
IN_PROGRESS = "IDEMPOTENCY_IN_PROGRESS"
IN_PROGRESS_POLL_S = 0.02  # how often a repeat looks whether the first request has written
# Replicas' wall clocks may differ by this much (claims are timed by the replica that took
# them, reviews by the service).
CLOCK_SLACK_S = 5.0

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


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable() and key.isascii()


def order_key(user_id: str, key: str) -> str:
    """The Idempotency-Key the orders service gets for a client's `idempotencyKey`: the
    client's key scoped to the caller, so that two callers' equal keys are two orders, and
    no caller can take up (or learn, by an IDEMPOTENCY_CONFLICT) a key another one used.
    Every replica derives the same key, so a retry through any of them is recognised."""
    return "gw1:" + hashlib.sha256(orjson.dumps([user_id, key])).hexdigest()


def review_key(user_id: str, key: str) -> str:
    """The key under which the gateway keeps an `addReview` idempotencyKey: scoped to the
    caller, as `order_key`."""
    return "review:" + hashlib.sha256(orjson.dumps([user_id, key])).hexdigest()


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
    if not valid_key(input.idempotency_key):
        errors.append(user_error("BAD_USER_INPUT", KEY_RULE, "idempotencyKey"))
    if errors:
        return {"order": None, "errors": errors}
    body = {
        "user_id": user_id,
        "items": [{"product_id": line.product_id, "quantity": line.quantity}
                  for line in input.items],
    }
    answer: list[int] = []
    try:
        # With its key, the client may send it again (and does, on a transient failure).
        order: Item = await ctx.upstream.request(
            "orders", "POST", "/orders", json=body,
            headers={"Idempotency-Key": order_key(user_id, input.idempotency_key)},
            refusals=PLACE_ORDER_REFUSALS, check=order_problem, answer=answer,
        )
    except Refused as refused:
        return {"order": None, "errors": [refused.payload()]}
    status, attempts = answer
    # 201: placed now. 200: the service's replay of an order placed with this key before:
    # by this request's earlier attempt (placed now, its answer lost), or by an earlier
    # request (counted then).
    if status == 201 or attempts > 1:
        ctx.observer.order_placed(str(order.get("currency")), _cents(order.get("total_cents")))
    await _committed(info, lambda: _order_changes(order))
    return {"order": order, "errors": []}


def _cents(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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
    if existing.get("status") != "CANCELLED":
        ctx.observer.order_cancelled()
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
    key = input.idempotency_key
    if key is not None and not valid_key(key):
        errors.append(user_error("BAD_USER_INPUT", KEY_RULE, "idempotencyKey"))
    if errors:
        return {"review": None, "errors": errors}
    # The reviews service refuses an unknown product with a bare 400; asking the catalog
    # first gives the caller a precise NOT_FOUND on the field at fault.
    if await ctx.loaders.load(PRODUCT, input.product_id) is None:
        return {"review": None,
                "errors": [user_error("NOT_FOUND", "No such product", "productId")]}
    body = {"product_id": input.product_id, "author_id": user_id, "rating": input.rating,
            "body": input.body}
    if key is None or ctx.idempotency is None:
        return await _write_review(info, body)
    return await _write_review_once(info, ctx.idempotency, review_key(user_id, key), body)


async def _write_review(info: Info, body: Item) -> Item:
    try:
        # No idempotency key upstream (the reviews service takes none): the client sends it
        # at most once (again only if no connection could be opened), and reports
        # UPSTREAM_OUTCOME_UNKNOWN when it went out and may have been carried out.
        review: Item = await info.context.upstream.request(
            "reviews", "POST", "/reviews", json=body, refusals=ADD_REVIEW_REFUSALS,
            check=review_problem)
    except Refused as refused:
        return {"review": None, "errors": [refused.payload()]}
    info.context.observer.review_added()
    # The review's lists, and its product, whose rating changed.
    await _committed(info, lambda: [("Review", review["id"], review),
                                    ("Product", review["product_id"], None)])
    return {"review": review, "errors": []}


async def _write_review_once(info: Info, store: IdempotencyStore, key: str,
                             body: Item) -> Item:
    """`addReview` with the client's idempotency key, kept by the gateway (the reviews
    service has none): the review is written at most once per key, whichever replica and
    however many requests carry it.

    The first request claims the key and writes; a repeat with the same body answers the
    review stored with the key, or, while the first is still writing, waits for it (within
    its own deadline; after it, IDEMPOTENCY_IN_PROGRESS: send it again). When the first
    could not tell whether its write was made (UPSTREAM_OUTCOME_UNKNOWN), or gave no news
    for longer than a request may take (its replica died), a repeat looks for that review
    among the author's reviews before it writes: it is answered if it exists."""
    ctx = info.context
    fingerprint = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    mine = Claim(fingerprint, uuid.uuid4().hex, store.now())
    while True:
        held, claimed = await store.claim(key, mine)
        if claimed:
            break
        if held.fingerprint != fingerprint:
            return {"review": None, "errors": [user_error(
                "IDEMPOTENCY_CONFLICT", "This idempotencyKey was used for another review",
                "idempotencyKey")]}
        if held.result is not None:
            return {"review": held.result, "errors": []}
        if held.unknown or held.at + ctx.settings.request_deadline_s + CLOCK_SLACK_S \
                < store.now():
            found = await _find_review(info, body, held.at)
            if found is not None:
                await store.replace(key, held, Claim(fingerprint, held.owner, held.at, found))
                return {"review": found, "errors": []}
            if await store.replace(key, held, mine):
                break
            continue  # another request took it over first
        deadline = ctx.scope.deadline
        if deadline is None or deadline.remaining() <= IN_PROGRESS_POLL_S:
            raise GatewayError("A request with this idempotencyKey is still being carried "
                               "out: send it again to get its review", code=IN_PROGRESS,
                               retryable=True)
        await store.clock.sleep(IN_PROGRESS_POLL_S)
    try:
        answer = await _write_review(info, body)
    except UpstreamError as err:
        # Not made (refused before it went out): the key is free again. May have been made:
        # a repeat looks for it first.
        made = err.code == OUTCOME_UNKNOWN
        await store.replace(key, mine, replace(mine, unknown=True) if made else None)
        raise
    except BaseException:
        await store.replace(key, mine, replace(mine, unknown=True))
        raise
    if answer["review"] is None:  # refused by the service: nothing was written
        await store.replace(key, mine, None)
    else:
        await store.replace(key, mine, replace(mine, result=answer["review"]))
    return answer


async def _find_review(info: Info, body: Item, since: float) -> Item | None:
    """The author's review with exactly this body written since `since` (wall time, less
    some slack for the clocks), if any: the write of an earlier request with the same key
    whose outcome was not known."""
    found = await info.context.upstream.request(
        "reviews", "GET", "/reviews", params={"author_ids": body["author_id"]},
        route="/reviews?author_ids")
    for review in (found or {}).get("items") or ():
        if not isinstance(review, dict) or any(review.get(k) != v for k, v in body.items()):
            continue
        try:
            created = datetime.fromisoformat(str(review.get("created_at"))).timestamp()
        except ValueError:
            continue
        if created >= since - CLOCK_SLACK_S:
            return review
    return None
