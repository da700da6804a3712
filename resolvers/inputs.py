"""Input types of the public graph."""

from __future__ import annotations

import strawberry


@strawberry.input(description="One line of an order: a product and how many units of it.")
class OrderLineInput:
    product_id: strawberry.ID = strawberry.field(
        description="Id of the product to order, such as p42. An unknown product refuses the "
        "whole order with BAD_USER_INPUT."
    )
    quantity: int = strawberry.field(
        description="How many units; at least 1 (else BAD_USER_INPUT on `items.N.quantity`). "
        "More than are in stock refuses the order with INSUFFICIENT_STOCK."
    )


@strawberry.input(description="What `placeOrder` needs: the lines and an idempotency key.")
class PlaceOrderInput:
    items: list[OrderLineInput] = strawberry.field(
        description="The lines of the order: at least one."
    )
    idempotency_key: str = strawberry.field(
        description="A key the client chooses per order, 1 to 200 printable ASCII characters "
        "(a UUID will do): retrying with the same key and the same items returns the same order "
        "instead of placing another; the same key with other items is refused with "
        "IDEMPOTENCY_CONFLICT."
    )


@strawberry.input(description="What `addReview` needs: the product, a rating and a text, and "
                  "optionally an idempotency key.")
class AddReviewInput:
    product_id: strawberry.ID = strawberry.field(
        description="Id of the product reviewed, such as p42 (unknown: NOT_FOUND)."
    )
    rating: int = strawberry.field(
        description="An integer from 1 (worst) to 5 (best); anything else is refused with "
        "INVALID_RATING."
    )
    body: str = strawberry.field(
        description="The text of the review, in plain text: 1 to 10,000 characters, not only "
        "spaces (else BAD_USER_INPUT)."
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Optional: a key the client chooses per review, 1 to 200 printable ASCII "
        "characters (a UUID will do), so that the mutation may be sent again safely: a repeat "
        "with the same key and the same input returns the review written the first time "
        "instead of writing another; the same key with another input is refused with "
        "IDEMPOTENCY_CONFLICT. Keys are the caller's own (another user's equal key is "
        "another review) and are remembered for a day (IDEMPOTENCY_TTL_S).",
    )
