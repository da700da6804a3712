"""Root types: where every query and mutation of the public graph starts."""

from __future__ import annotations

import strawberry

from resolvers import mutations as m
from resolvers import query as q
from resolvers import subscriptions as s
from schema.directives import PRIVATE, assumed, cache, sliced_by
from schema.permissions import requires
from schema.types import (
    AddReviewPayload,
    CancelOrderPayload,
    Category,
    Order,
    PlaceOrderPayload,
    Product,
    Review,
    Stock,
    User,
    documented,
    first_argument,
)


@strawberry.type(
    description="Read the shop's graph: users, the catalog, reviews and orders. Anyone may "
    "query; fields that need a signed-in caller (a bearer token in the Authorization header) "
    "say so. A field whose service fails is null (a required list: empty, or a null per id) "
    "with an error at its path in `errors`, and the rest of the response stands. Operations "
    "are limited in depth, aliases and cost: the cost is the IBM GraphQL Cost Directives "
    "specification's, from the `@cost` and `@listSize` of this schema (an object 1, a scalar "
    "0, a list times its `first` or number of `ids`, a mutation 10 more); an operation over a "
    "limit is refused with QUERY_TOO_COMPLEX."
)
class Query:
    me: User | None = strawberry.field(
        resolver=q.me, directives=cache(60, PRIVATE),
        description="The signed-in user (who the bearer token names); null for an anonymous "
        "caller, without an error."
    )
    user: User | None = documented(
        strawberry.field(
            resolver=q.user,
            description="A user by id; null when there is no such user."
        ),
        id="The user's id, such as u1.",
    )
    users: list[User | None] = documented(
        strawberry.field(
            resolver=q.users, directives=[sliced_by("ids")],
            description="Users by id, in the order asked, one entry per id (repeats included): "
            "null where there is no such user.",
        ),
        ids="The users' ids, such as [\"u1\", \"u2\"]. Each id multiplies the query cost of "
        "the selection.",
    )
    product: Product | None = documented(
        strawberry.field(
            resolver=q.product,
            description="A product by id; null when there is no such product."
        ),
        id="The product's id, such as p42.",
    )
    products: list[Product | None] = documented(
        strawberry.field(
            resolver=q.products, directives=[sliced_by("ids")],
            description="Products by id, in the order asked, one entry per id (repeats "
            "included): null where there is no such product.",
        ),
        ids="The products' ids, such as [\"p1\", \"p42\"]. Each id multiplies the query cost "
        "of the selection.",
    )
    top_products: list[Product] = documented(
        strawberry.field(
            resolver=q.top_products, directives=[*cache(60), sliced_by("first")],
            description="The best-rated products: highest `averageRating` first, ties by id."
        ),
        first=first_argument(5, 100, "products"),
    )
    category: Category | None = documented(
        strawberry.field(
            resolver=q.category,
            description="A category by id; null when there is no such category."
        ),
        id="The category's id, such as c3.",
    )
    categories: list[Category] = strawberry.field(
        resolver=q.categories,
        directives=[*cache(3600), assumed(100)],
        description="Every category of the catalog, top-level and nested, sorted by name "
        "(then id). Rebuild the tree from each category's `parent`."
    )
    order: Order | None = documented(
        strawberry.field(
            resolver=q.order, permission_classes=[requires("read:orders")],
            description="An order by id. Needs a signed-in caller with the read:orders scope "
            "(UNAUTHENTICATED without a token, FORBIDDEN without the scope). Returns the "
            "caller's own order (an admin: anyone's); null when there is no such order, and "
            "also for someone else's order, which reads as if it did not exist.",
        ),
        id="The order's id, such as o7.",
    )


@strawberry.type(
    description="Change the shop's data. Every mutation acts as the signed-in caller (a bearer "
    "token in the Authorization header) and needs the scope its field names: without a token "
    "the result is null with an UNAUTHENTICATED error, without the scope FORBIDDEN. A refusal "
    "of the input comes back in the payload's `errors`; a failing service is a GraphQL error "
    "with an `extensions.code`, and `extensions.retryable` says whether trying again may "
    "succeed. UPSTREAM_OUTCOME_UNKNOWN says the change was sent but its answer never came: "
    "it may have been made. Retry placeOrder with the same `idempotencyKey` and cancelOrder "
    "as it was (both are made once); read the product's reviews before adding one again."
)
class Mutation:
    place_order: PlaceOrderPayload = documented(
        strawberry.field(
            resolver=m.place_order, permission_classes=[requires("write:orders")],
            description="Place an order as the signed-in user, at the products' current "
            "prices, reserving their stock. Needs the write:orders scope. Safe to retry with "
            "the same `idempotencyKey`: the order is placed once. Refusals in `errors`: "
            "BAD_USER_INPUT (no items, a quantity under 1, an unknown product, a bad key), "
            "INSUFFICIENT_STOCK, IDEMPOTENCY_CONFLICT (the key was used for other items).",
        ),
        input="The order's lines and its idempotency key.",
    )
    cancel_order: CancelOrderPayload = documented(
        strawberry.field(
            resolver=m.cancel_order, permission_classes=[requires("write:orders")],
            description="Cancel one of the signed-in user's own orders (admins too can cancel "
            "only their own) and release its stock. Needs the write:orders scope. Cancelling a "
            "cancelled order returns it unchanged. Refusals in `errors`: NOT_FOUND (no such "
            "order, or someone else's), ALREADY_SHIPPED.",
        ),
        id="The id of the order to cancel, such as o7.",
    )
    add_review: AddReviewPayload = documented(
        strawberry.field(
            resolver=m.add_review, permission_classes=[requires("write:reviews")],
            description="Review a product as the signed-in user; the product's "
            "`averageRating` and `reviewCount` include it at once. Needs the write:reviews "
            "scope. With an `idempotencyKey` it may be sent again safely: the review is written "
            "once. Refusals in `errors`: INVALID_RATING (not 1 to 5), BAD_USER_INPUT (an empty "
            "or too long body), NOT_FOUND (no such product), IDEMPOTENCY_CONFLICT (the key was "
            "used for another review).",
        ),
        input="The product, the rating and the text of the review.",
    )


@strawberry.type(
    description="Live updates, fed by the domain services' change events: over WebSocket "
    "(graphql-transport-ws, at /graphql) or Server-Sent Events (POST /graphql with "
    "`Accept: text/event-stream`). Each message is the subscription's selection resolved like "
    "a query (batched, cached) at the version the event names or newer; an older or repeated "
    "event sends nothing. A subscription is checked when it starts like a query (limits, "
    "rate limit, permissions); a connection's bearer token is checked then too, and the "
    "connection ends when the token expires."
)
class Subscription:
    stock_changed: Stock = documented(
        strawberry.subscription(
            resolver=s.stock_changed,
            description="Every change of the product's stock: orders placed and cancelled, "
            "restocks. NOT_FOUND when there is no such product.",
        ),
        product_id="The product's id, such as p42.",
    )
    product_changed: Product = documented(
        strawberry.subscription(
            resolver=s.product_changed,
            description="Every change of the product's name, description, price or rating "
            "(a new review changes its rating). NOT_FOUND when there is no such product.",
        ),
        id="The product's id, such as p42.",
    )
    review_added: Review = documented(
        strawberry.subscription(
            resolver=s.review_added,
            description="Each new review of the product. NOT_FOUND when there is no such "
            "product.",
        ),
        product_id="The product's id, such as p42.",
    )
    order_updated: Order = strawberry.subscription(
        resolver=s.order_updated, permission_classes=[requires("read:orders")],
        description="Every change of the signed-in caller's own orders: placed, cancelled, "
        "shipped. Needs a bearer token with the read:orders scope (UNAUTHENTICATED without "
        "one, FORBIDDEN without the scope).",
    )
