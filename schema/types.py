"""The public graph's object types, as in `../shared/contract/schema.graphql`.

Sources are the upstream JSON items themselves (the schema's default resolver reads dict
keys), so no object is built per item. A field's GraphQL type is its annotation here; fields
that need work name their resolver in `resolvers/`, which returns upstream items.

Every type, field, argument and enum value has a description: it is what a developer reads in
the IDE's docs panel (`tests/gateway/test_schema_docs.py` holds that). Arguments are declared
by the resolvers' signatures, so their descriptions are given here, with `documented`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import strawberry
from strawberry.types.field import StrawberryField

from resolvers import entities as r
from schema.deprecations import reason as deprecated
from schema.directives import PRIVATE, Cost, assumed, cache, sliced_by
from schema.permissions import IsSelf, OwnOrders


def documented(field: object, **arguments: str) -> Any:
    """`field`, with descriptions for the arguments its resolver declares, by Python name.

    The resolvers in `resolvers/` declare the arguments (names, types, defaults); the public
    graph's documentation belongs with the schema, so it is attached here. Naming an argument
    the resolver does not have is an error, so a renamed argument cannot lose its text.

    Typed `object` to `Any`: Strawberry types `strawberry.field(resolver=f)` as f's return
    type (here an upstream dict), while the class attribute it is assigned to is annotated
    with the field's GraphQL type; the value is a `StrawberryField` either way."""
    assert isinstance(field, StrawberryField)
    declared = {argument.python_name: argument for argument in field.arguments}
    unknown = sorted(set(arguments) - set(declared))
    if unknown:
        raise TypeError(f"{field.python_name} has no argument {', '.join(unknown)}")
    for name, description in arguments.items():
        declared[name].description = description
    return field


def first_argument(default: int, maximum: int, what: str) -> str:
    """The description of a list's `first` argument."""
    return (
        f"How many {what} to return, from 0 to {maximum} (default {default}; null also means "
        f"{default}). Any other number is refused with a BAD_USER_INPUT error at this field. "
        "It multiplies the query cost of everything selected under the field."
    )


def after_argument(what: str) -> str:
    """The description of a connection's `after` argument."""
    return (
        f"Continue after this cursor: the `endCursor` (or an edge's `cursor`) of a previous "
        f"page of these {what}. Omit it, or pass null, for the first page. A cursor of another "
        "list, or one this API did not issue, is refused with BAD_USER_INPUT."
    )


ON_FAILURE = (
    " Also null, with an error at this path, when the service behind it fails; the rest of "
    "the response stands."
)
NEWEST_FIRST = "newest first (by `createdAt`, then id)"


@strawberry.type(
    description="An amount of money: an integer number of the currency's minor units (such as "
    "cents) and an ISO 4217 currency code, so that no rounding creeps in: "
    "`{amount: 1999, currency: \"USD\"}` is $19.99.",
    directives=cache(inherit_max_age=True),
)
class Money:
    amount: int = strawberry.field(
        description="The amount in minor units of `currency` (cents for USD): 1999 is 19.99."
    )
    currency: str = strawberry.field(
        description="ISO 4217 currency code, such as USD; says how many minor units make a unit."
    )


@strawberry.type(
    description="Stock of a product in the warehouse that ships it, from the inventory "
    "service. Stock changes with every order: these figures are cached for a few seconds at "
    "most (one second when only a few units are left).",
    directives=cache(5),
)
class Stock:
    sku: str = strawberry.field(
        description="The stock-keeping unit this stock is for (the product's `sku`)."
    )
    quantity: int = strawberry.field(
        description="Units available to order now (placed orders have already taken theirs "
        "off); 0 when sold out."
    )
    in_stock: bool = strawberry.field(
        description="Whether at least one unit is available (`quantity` > 0)."
    )
    warehouse: str = strawberry.field(
        description="Code of the warehouse that holds the stock and ships the product, such "
        "as ams-1."
    )


@strawberry.type(
    description="Where a page of a connection ends, and whether another page follows "
    "(Relay cursor connections specification)."
)
class PageInfo:
    has_next_page: bool = strawberry.field(
        description="True when more items exist after those returned (also for `first: 0`, "
        "which returns no items but still says whether any exist)."
    )
    end_cursor: str | None = strawberry.field(
        description="Cursor of the last edge of this page: pass it as `after` for the next "
        "page. Null when the page has no edges."
    )


@strawberry.type(
    description="A customer of the shop. Anyone may read a user's public fields; `email`, "
    "`orders` and `recommendations` are for the user themself (or an admin) only.",
    directives=cache(300),
)
class User:
    id: strawberry.ID = strawberry.field(
        description="Opaque, stable id, such as u1: pass it to `user(id:)` or `users(ids:)`."
    )
    name: str = strawberry.field(description="Full name, for display.")
    username: str = strawberry.field(description="Public handle, shown with the user's reviews.")
    email: str | None = strawberry.field(
        permission_classes=[IsSelf],
        directives=cache(300, PRIVATE),
        description="E-mail address. Only the user themself (signed in as that user) or an "
        "admin may read it: for anyone else it is null with a FORBIDDEN error, and the rest of "
        "the response stands."
    )
    tier: str = strawberry.field(description="Loyalty tier: `standard` or `gold`.")
    reviews: list[Review] = documented(
        strawberry.field(
            resolver=r.user_reviews, directives=[*cache(60), sliced_by("first")],
            description=f"The reviews the user wrote, {NEWEST_FIRST}: at most `first` of "
            "them. Empty, with an error, when the reviews service fails."
        ),
        first=first_argument(10, 100, "reviews"),
    )
    orders: OrderConnection = documented(
        strawberry.field(
            resolver=r.user_orders,
            permission_classes=[OwnOrders],
            directives=[*cache(0, PRIVATE), sliced_by("first", ["edges"])],
            description=f"The orders the user placed, {NEWEST_FIRST}, a page at a time. Needs "
            "a bearer token with the read:orders scope, of the user themself (or an admin); for "
            "anyone else the page is empty with a FORBIDDEN error (also empty, with an error, "
            "when the orders service fails). Never cached."
        ),
        first=first_argument(10, 100, "orders"),
        after=after_argument("orders"),
    )
    recommendations: list[Product] = documented(
        strawberry.field(
            resolver=r.user_recommendations,
            permission_classes=[IsSelf],
            directives=[*cache(600, PRIVATE), sliced_by("first")],
            description="Products recommended to the user, best match first. Only the user "
            "themself or an admin may read them (anyone else: an empty list with a FORBIDDEN "
            "error). May hold fewer than `first` products: recommended products that no longer "
            "exist are dropped. Computed by a separate service, they may lag behind the user's "
            "latest activity.",
        ),
        first=first_argument(5, 50, "products"),
    )


@strawberry.type(
    description="A product of the catalog, with its price, stock and reviews.",
    directives=cache(300),
)
class Product:
    id: strawberry.ID = strawberry.field(
        description="Opaque, stable id, such as p42: pass it to `product(id:)`, "
        "`products(ids:)`, `placeOrder` or `addReview`."
    )
    sku: str = strawberry.field(
        description="The stock-keeping unit: the warehouse's code for the product."
    )
    name: str = strawberry.field(description="Display name.")
    description: str = strawberry.field(
        description="Long description of the product, in plain text."
    )
    price: Money = strawberry.field(
        resolver=r.product_price,
        description="The current price of one unit. An order keeps the price it was placed "
        "at (`OrderItem.unitPrice`)."
    )
    weight_grams: int = strawberry.field(description="Shipping weight of one unit, in grams.")
    category: Category | None = strawberry.field(
        resolver=r.product_category,
        description="The category the product is listed in; null when it is in none."
        + ON_FAILURE
    )
    inventory: Stock | None = strawberry.field(
        resolver=r.product_inventory, directives=cache(5),
        description="Current stock of the product; null when the inventory has no stock row "
        "for it." + ON_FAILURE
    )
    in_stock: bool | None = strawberry.field(
        # A Boolean costs 0 by the specification, but this one reads the inventory service.
        resolver=r.product_in_stock, directives=[*cache(5), Cost(weight=1)],
        deprecation_reason=deprecated("Product.inStock"),
        description="Whether the product can be ordered now (at least one unit in stock): "
        "`inventory.inStock` without the rest of the stock. Null when the stock is unknown."
        + ON_FAILURE
    )
    average_rating: float | None = strawberry.field(
        resolver=r.product_average_rating,
        directives=cache(60),
        description="Mean rating of the product's reviews, from 1.0 to 5.0; null for a product "
        "without reviews.",
    )
    review_count: int = strawberry.field(
        resolver=r.product_review_count, directives=cache(60),
        description="How many reviews the product has (all of them, whatever `reviews(first:)` "
        "returns)."
    )
    reviews: list[Review] = documented(
        strawberry.field(
            resolver=r.product_reviews, directives=[*cache(60), sliced_by("first")],
            description=f"The product's reviews, {NEWEST_FIRST}: at most `first` of them. "
            "Empty, with an error, when the reviews service fails."
        ),
        first=first_argument(10, 100, "reviews"),
    )


@strawberry.type(
    description="A node of the category tree: categories nest through `parent`.",
    directives=cache(3600),
)
class Category:
    id: strawberry.ID = strawberry.field(
        description="Opaque, stable id, such as c3: pass it to `category(id:)`."
    )
    name: str = strawberry.field(description="Display name.")
    parent: Category | None = strawberry.field(
        resolver=r.category_parent,
        description="The category this one belongs to; null for a top-level category."
        + ON_FAILURE
    )
    products: ProductConnection = documented(
        strawberry.field(
            resolver=r.category_products,
            directives=[*cache(300), sliced_by("first", ["edges"])],
            description="The products listed in the category (not in its subcategories), in "
            "the catalog's order, a page at a time. An empty page, with an error, when the "
            "catalog fails."
        ),
        first=first_argument(20, 100, "products"),
        after=after_argument("products"),
    )


@strawberry.type(
    description="A customer's review of a product: a rating from 1 to 5 and a text.",
    directives=cache(60),
)
class Review:
    id: strawberry.ID = strawberry.field(description="Opaque, stable id, such as r100.")
    rating: int = strawberry.field(
        description="The rating the author gave, an integer from 1 (worst) to 5 (best)."
    )
    body: str = strawberry.field(description="The text of the review, in plain text.")
    created_at: str = strawberry.field(
        description="When it was written: an ISO 8601 date and time in UTC, such as "
        "2024-05-01T12:30:00Z."
    )
    author: User | None = strawberry.field(
        resolver=r.review_author,
        description="The user who wrote it; null when that user no longer exists." + ON_FAILURE
    )
    product: Product | None = strawberry.field(
        resolver=r.review_product,
        description="The product reviewed; null when it is no longer in the catalog."
        + ON_FAILURE
    )


@strawberry.enum(description="Where an order is in its life: PLACED, then SHIPPED or CANCELLED.")
class OrderStatus(Enum):
    PLACED = strawberry.enum_value(
        "PLACED",
        description="Placed and its stock reserved, not shipped yet: it may still be cancelled.",
    )
    SHIPPED = strawberry.enum_value(
        "SHIPPED", description="Shipped to the customer: it can no longer be cancelled."
    )
    CANCELLED = strawberry.enum_value(
        "CANCELLED", description="Cancelled before shipping; its stock was released."
    )


@strawberry.type(description="A line of an order: a product, how many, and at what price.")
class OrderItem:
    product: Product | None = strawberry.field(
        resolver=r.order_item_product,
        description="The product ordered; null when it is no longer in the catalog."
        + ON_FAILURE
    )
    quantity: int = strawberry.field(description="How many units were ordered (at least 1).")
    unit_price: Money = strawberry.field(
        resolver=r.order_item_unit_price,
        description="Price of one unit when the order was placed (later price changes do not "
        "affect it), in the order's currency."
    )


@strawberry.type(
    description="An order placed by a customer. Orders are private: a caller reads their own "
    "(an admin: any) through `order(id:)` or `User.orders`, both of which need the read:orders "
    "scope, or in a mutation's payload. Never cached.",
    directives=cache(0, PRIVATE),
)
class Order:
    id: strawberry.ID = strawberry.field(
        description="Opaque, stable id, such as o7: pass it to `order(id:)` or `cancelOrder`."
    )
    status: OrderStatus = strawberry.field(
        description="Where the order is in its life: placed, shipped or cancelled."
    )
    items: list[OrderItem] = strawberry.field(
        resolver=r.order_items, directives=[assumed(10)],
        description="The lines of the order, as placed (at least one)."
    )
    total: Money = strawberry.field(
        resolver=r.order_total,
        description="What the order costs: the sum of its lines' unit price times quantity."
    )
    created_at: str = strawberry.field(
        description="When it was placed: an ISO 8601 date and time in UTC, such as "
        "2024-05-01T12:30:00Z."
    )
    customer: User | None = strawberry.field(
        resolver=r.order_customer,
        description="The user who placed it; null when that user no longer exists."
        + ON_FAILURE
    )


@strawberry.type(description="A product in a page of products, with its cursor.")
class ProductEdge:
    cursor: str = strawberry.field(
        description="Opaque cursor: pass it as `after` to continue right after this product. "
        "Valid only for the list that returned it."
    )
    node: Product = strawberry.field(description="The product.")


@strawberry.type(
    description="A page of products (Relay connection): its edges, and `pageInfo` to fetch "
    "the next page with `after: pageInfo.endCursor`."
)
class ProductConnection:
    edges: list[ProductEdge] = strawberry.field(
        description="The products of this page, each with its cursor; at most `first` of them, "
        "fewer on the last page."
    )
    page_info: PageInfo = strawberry.field(
        description="Whether more products follow, and the cursor to continue from."
    )


@strawberry.type(description="An order in a page of orders, with its cursor.")
class OrderEdge:
    cursor: str = strawberry.field(
        description="Opaque cursor: pass it as `after` to continue right after this order. "
        "Valid only for the list that returned it."
    )
    node: Order = strawberry.field(description="The order.")


@strawberry.type(
    description="A page of orders (Relay connection): its edges, and `pageInfo` to fetch the "
    "next page with `after: pageInfo.endCursor`."
)
class OrderConnection:
    edges: list[OrderEdge] = strawberry.field(
        description="The orders of this page, each with its cursor; at most `first` of them, "
        "fewer on the last page."
    )
    page_info: PageInfo = strawberry.field(
        description="Whether more orders follow, and the cursor to continue from."
    )


@strawberry.type(
    description="Why a mutation refused its input, in terms the client can act on (such as a "
    "shortage of stock). Failures that are not the input's fault (sign-in, permissions, a "
    "service down) are GraphQL errors with an `extensions.code` instead."
)
class UserError:
    code: str = strawberry.field(
        description="Machine-readable reason: BAD_USER_INPUT, NOT_FOUND, INSUFFICIENT_STOCK, "
        "IDEMPOTENCY_CONFLICT, ALREADY_SHIPPED or INVALID_RATING (each mutation says which it "
        "may return). Branch on this, not on `message`."
    )
    message: str = strawberry.field(
        description="What went wrong, in English, for a person; its wording may change."
    )
    field: str | None = strawberry.field(
        description="Path of the input field at fault, such as `items.0.quantity`, "
        "`idempotencyKey` or `id`; null when no single field is."
    )


@strawberry.type(
    description="The result of `placeOrder`: the order, or the reasons it was refused."
)
class PlaceOrderPayload:
    order: Order | None = strawberry.field(
        description="The order placed (or, for a repeated `idempotencyKey`, the order placed "
        "the first time); null when refused."
    )
    errors: list[UserError] = strawberry.field(
        directives=[assumed(1)],  # empty on success, one refusal otherwise
        description="Why the order was refused: empty on success. Codes: BAD_USER_INPUT, "
        "INSUFFICIENT_STOCK, IDEMPOTENCY_CONFLICT."
    )


@strawberry.type(
    description="The result of `cancelOrder`: the cancelled order, or why it was not cancelled."
)
class CancelOrderPayload:
    order: Order | None = strawberry.field(
        description="The order, now CANCELLED; null when refused."
    )
    errors: list[UserError] = strawberry.field(
        directives=[assumed(1)],  # empty on success, one refusal otherwise
        description="Why it was not cancelled: empty on success. Codes: NOT_FOUND, "
        "ALREADY_SHIPPED."
    )


@strawberry.type(description="The result of `addReview`: the review, or why it was refused.")
class AddReviewPayload:
    review: Review | None = strawberry.field(
        description="The review, now first among the product's and the author's reviews (or, "
        "for a repeated `idempotencyKey`, the review written the first time); null when "
        "refused."
    )
    errors: list[UserError] = strawberry.field(
        directives=[assumed(1)],  # empty on success, one refusal otherwise
        description="Why the review was refused: empty on success. Codes: INVALID_RATING, "
        "BAD_USER_INPUT, NOT_FOUND, IDEMPOTENCY_CONFLICT."
    )
