"""Input types of the public graph."""

from __future__ import annotations

import strawberry


@strawberry.input(description="One line of an order: a product and how many of it.")
class OrderLineInput:
    product_id: strawberry.ID = strawberry.field(description="The product to order.")
    quantity: int = strawberry.field(description="How many; at least 1.")


@strawberry.input(description="What `placeOrder` needs.")
class PlaceOrderInput:
    items: list[OrderLineInput] = strawberry.field(description="The lines of the order.")
    idempotency_key: str = strawberry.field(
        description="A key the client chooses per order: retrying with the same key and the "
        "same items returns the same order instead of placing another."
    )


@strawberry.input(description="What `addReview` needs.")
class AddReviewInput:
    product_id: strawberry.ID = strawberry.field(description="The product reviewed.")
    rating: int = strawberry.field(description="From 1 to 5.")
    body: str = strawberry.field(description="The text of the review.")
