"""Root types: where every query and mutation of the public graph starts."""

from __future__ import annotations

import strawberry

from resolvers import mutations as m
from resolvers import query as q
from schema.directives import PRIVATE, cache
from schema.permissions import requires
from schema.types import (
    AddReviewPayload,
    CancelOrderPayload,
    Category,
    Order,
    PlaceOrderPayload,
    Product,
    User,
)


@strawberry.type(description="Read the shop's graph.")
class Query:
    me: User | None = strawberry.field(resolver=q.me, directives=cache(60, PRIVATE),
        description="The signed-in user.")
    user: User | None = strawberry.field(resolver=q.user, description="A user by id.")
    users: list[User | None] = strawberry.field(
        resolver=q.users, description="Users by id, in the order asked; null where not found."
    )
    product: Product | None = strawberry.field(
        resolver=q.product, description="A product by id."
    )
    products: list[Product | None] = strawberry.field(
        resolver=q.products,
        description="Products by id, in the order asked; null where not found.",
    )
    top_products: list[Product] = strawberry.field(
        resolver=q.top_products, directives=cache(60),
        description="The best-rated products."
    )
    category: Category | None = strawberry.field(
        resolver=q.category, description="A category by id."
    )
    categories: list[Category] = strawberry.field(
        resolver=q.categories, directives=cache(3600),
        description="Every category, sorted by name."
    )
    order: Order | None = strawberry.field(
        resolver=q.order, permission_classes=[requires("read:orders")],
        description="An order by id: the caller's own (an admin: any); another's reads as "
        "null.")


@strawberry.type(description="Change the shop's data.")
class Mutation:
    place_order: PlaceOrderPayload = strawberry.field(
        resolver=m.place_order, permission_classes=[requires("write:orders")],
        description="Place an order as the signed-in user; reserves stock.",
    )
    cancel_order: CancelOrderPayload = strawberry.field(
        resolver=m.cancel_order, permission_classes=[requires("write:orders")],
        description="Cancel one of the signed-in user's orders; releases stock.",
    )
    add_review: AddReviewPayload = strawberry.field(
        resolver=m.add_review, permission_classes=[requires("write:reviews")],
        description="Review a product as the signed-in user."
    )
