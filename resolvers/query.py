"""Root query fields."""

from __future__ import annotations

import strawberry

from app.execution.context import Info
from loaders.declarations import ALL_CATEGORIES, CATEGORY, ORDER, PRODUCT, TOP_PRODUCTS, USER
from loaders.spec import Item
from resolvers.pagination import check_first


async def me(info: Info) -> Item | None:
    user_id = info.context.user_id
    return None if user_id is None else await info.context.loaders.load(USER, user_id)


async def user(info: Info, id: strawberry.ID) -> Item | None:
    return await info.context.loaders.load(USER, id)


async def users(info: Info, ids: list[strawberry.ID]) -> list[Item | None]:
    return await info.context.loaders.load_many(USER, ids)


async def product(info: Info, id: strawberry.ID) -> Item | None:
    return await info.context.loaders.load(PRODUCT, id)


async def products(info: Info, ids: list[strawberry.ID]) -> list[Item | None]:
    return await info.context.loaders.load_many(PRODUCT, ids)


async def top_products(info: Info, first: int | None = 5) -> list[Item]:
    n = check_first(first, 5)
    body = await info.context.loaders.load(TOP_PRODUCTS, n)
    return list(body["items"])[:n]


async def category(info: Info, id: strawberry.ID) -> Item | None:
    return await info.context.loaders.load(CATEGORY, id)


async def categories(info: Info) -> list[Item]:
    body = await info.context.loaders.load(ALL_CATEGORIES, "all")
    return sorted(body["items"], key=lambda c: (c["name"], c["id"]))


async def order(info: Info, id: strawberry.ID) -> Item | None:
    found = await info.context.loaders.load(ORDER, id)
    # Someone else's order answers as if it did not exist.
    if found is None or not info.context.viewer.owns(found):
        return None
    return found
