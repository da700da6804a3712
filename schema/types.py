"""The public graph's object types, as in `../shared/contract/schema.graphql`.

Sources are the upstream JSON items themselves (the schema's default resolver reads dict
keys), so no object is built per item. A field's GraphQL type is its annotation here; fields
that need work name their resolver in `resolvers/`, which returns upstream items.
"""

from __future__ import annotations

from enum import Enum

import strawberry

from resolvers import entities as r
from schema.directives import PRIVATE, cache
from schema.permissions import IsSelf, OwnOrders


@strawberry.type(
    description="An amount of money in minor units (cents) and its currency.",
    directives=cache(inherit_max_age=True),
)
class Money:
    amount: int = strawberry.field(description="Minor units (cents).")
    currency: str = strawberry.field(description="ISO 4217 code, such as USD.")


@strawberry.type(
    description="Stock of a product in the warehouse that ships it.",
    directives=cache(5),
)
class Stock:
    sku: str = strawberry.field(description="The stock-keeping unit.")
    quantity: int = strawberry.field(description="Units available.")
    in_stock: bool = strawberry.field(description="Whether at least one unit is available.")
    warehouse: str = strawberry.field(description="The warehouse that holds the stock.")


@strawberry.type(description="Whether more items follow, and where to continue.")
class PageInfo:
    has_next_page: bool = strawberry.field(
        description="True when more items exist after those returned (also for `first: 0`)."
    )
    end_cursor: str | None = strawberry.field(
        description="Cursor of the last edge: pass it as `after` for the next page."
    )


@strawberry.type(
    description="A customer of the shop.",
    directives=cache(300),
)
class User:
    id: strawberry.ID = strawberry.field(description="Opaque id, such as u1.")
    name: str = strawberry.field(description="Full name.")
    username: str = strawberry.field(description="Public handle.")
    email: str | None = strawberry.field(
        permission_classes=[IsSelf],
        directives=cache(300, PRIVATE),
        description="E-mail address: visible to the user themself, or an admin."
    )
    tier: str = strawberry.field(description="Loyalty tier: standard or gold.")
    reviews: list[Review] = strawberry.field(
        resolver=r.user_reviews, directives=cache(60),
        description="The user's reviews, newest first."
    )
    orders: OrderConnection = strawberry.field(
        resolver=r.user_orders,
        permission_classes=[OwnOrders], directives=cache(0, PRIVATE),
        description="The user's orders, newest first."
    )
    recommendations: list[Product] = strawberry.field(
        resolver=r.user_recommendations,
        permission_classes=[IsSelf],
        directives=cache(600, PRIVATE),
        description="Products recommended to the user; fewer than `first` when some "
        "recommended products no longer exist.",
    )


@strawberry.type(
    description="A product of the catalog.",
    directives=cache(300),
)
class Product:
    id: strawberry.ID = strawberry.field(description="Opaque id, such as p42.")
    sku: str = strawberry.field(description="The stock-keeping unit.")
    name: str = strawberry.field(description="Display name.")
    description: str = strawberry.field(description="Long description.")
    price: Money = strawberry.field(resolver=r.product_price, description="The unit price.")
    weight_grams: int = strawberry.field(description="Shipping weight in grams.")
    category: Category | None = strawberry.field(
        resolver=r.product_category, description="The category the product is listed in."
    )
    inventory: Stock | None = strawberry.field(
        resolver=r.product_inventory, directives=cache(5),
        description="Current stock."
    )
    in_stock: bool | None = strawberry.field(
        resolver=r.product_in_stock, directives=cache(5),
        description="Whether the product can be ordered now."
    )
    average_rating: float | None = strawberry.field(
        resolver=r.product_average_rating,
        directives=cache(60),
        description="Mean rating of the product's reviews; null without reviews.",
    )
    review_count: int = strawberry.field(
        resolver=r.product_review_count, directives=cache(60),
        description="How many reviews the product has."
    )
    reviews: list[Review] = strawberry.field(
        resolver=r.product_reviews, directives=cache(60),
        description="The product's reviews, newest first."
    )


@strawberry.type(
    description="A node of the category tree.",
    directives=cache(3600),
)
class Category:
    id: strawberry.ID = strawberry.field(description="Opaque id, such as c3.")
    name: str = strawberry.field(description="Display name.")
    parent: Category | None = strawberry.field(
        resolver=r.category_parent, description="The parent category; null at the root."
    )
    products: ProductConnection = strawberry.field(
        resolver=r.category_products, directives=cache(300),
        description="Products of the category, in catalog order."
    )


@strawberry.type(
    description="A customer's review of a product.",
    directives=cache(60),
)
class Review:
    id: strawberry.ID = strawberry.field(description="Opaque id, such as r100.")
    rating: int = strawberry.field(description="From 1 to 5.")
    body: str = strawberry.field(description="The text of the review.")
    created_at: str = strawberry.field(description="When it was written (ISO 8601).")
    author: User | None = strawberry.field(
        resolver=r.review_author, description="Who wrote it."
    )
    product: Product | None = strawberry.field(
        resolver=r.review_product, description="The product reviewed."
    )


@strawberry.enum(description="Where an order is in its life.")
class OrderStatus(Enum):
    PLACED = "PLACED"
    SHIPPED = "SHIPPED"
    CANCELLED = "CANCELLED"


@strawberry.type(description="A line of an order.")
class OrderItem:
    product: Product | None = strawberry.field(
        resolver=r.order_item_product, description="The product ordered."
    )
    quantity: int = strawberry.field(description="How many.")
    unit_price: Money = strawberry.field(
        resolver=r.order_item_unit_price, description="Price of one unit when ordered."
    )


@strawberry.type(
    description="An order placed by a customer.",
    directives=cache(0, PRIVATE),
)
class Order:
    id: strawberry.ID = strawberry.field(description="Opaque id, such as o7.")
    status: OrderStatus = strawberry.field(description="Placed, shipped or cancelled.")
    items: list[OrderItem] = strawberry.field(
        resolver=r.order_items, description="The lines of the order."
    )
    total: Money = strawberry.field(resolver=r.order_total, description="What it costs.")
    created_at: str = strawberry.field(description="When it was placed (ISO 8601).")
    customer: User | None = strawberry.field(
        resolver=r.order_customer, description="Who placed it."
    )


@strawberry.type(description="A product and its cursor.")
class ProductEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this edge.")
    node: Product = strawberry.field(description="The product.")


@strawberry.type(description="A page of products.")
class ProductConnection:
    edges: list[ProductEdge] = strawberry.field(description="The products of this page.")
    page_info: PageInfo = strawberry.field(description="Whether more products follow.")


@strawberry.type(description="An order and its cursor.")
class OrderEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this edge.")
    node: Order = strawberry.field(description="The order.")


@strawberry.type(description="A page of orders.")
class OrderConnection:
    edges: list[OrderEdge] = strawberry.field(description="The orders of this page.")
    page_info: PageInfo = strawberry.field(description="Whether more orders follow.")


@strawberry.type(description="A refusal the client can act on, such as a shortage of stock.")
class UserError:
    code: str = strawberry.field(description="Machine-readable, such as INSUFFICIENT_STOCK.")
    message: str = strawberry.field(description="For a person.")
    field: str | None = strawberry.field(description="The input field at fault, if one is.")


@strawberry.type(description="The result of `placeOrder`.")
class PlaceOrderPayload:
    order: Order | None = strawberry.field(description="The order; null when refused.")
    errors: list[UserError] = strawberry.field(description="Why it was refused, if it was.")


@strawberry.type(description="The result of `cancelOrder`.")
class CancelOrderPayload:
    order: Order | None = strawberry.field(description="The order; null when refused.")
    errors: list[UserError] = strawberry.field(description="Why it was refused, if it was.")


@strawberry.type(description="The result of `addReview`.")
class AddReviewPayload:
    review: Review | None = strawberry.field(description="The review; null when refused.")
    errors: list[UserError] = strawberry.field(description="Why it was refused, if it was.")
