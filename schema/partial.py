"""Partial results: what a field shows when the service behind it fails.

A failed field is null, and a null in a non-null field nulls its parent, and so on up: a
query over products whose reviews service is down would lose the products, since
`Product.reviews` is `[Review!]!`. So each non-null list field gets a fallback here, an empty
list (or, for `users(ids)`/`products(ids)`, a null per id; for a connection, an empty page),
which the executors (`app.execution.executor`) use when the field's upstream call failed. The
error is reported all the same, at the field's path; only upstream failures and fields the
caller may not read (FORBIDDEN) are covered, never a client's bad argument or a bug.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from graphql import GraphQLField, GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLSchema

from app.core.errors import Forbidden
from app.execution.executor import DIRECT, FALLBACK

Fallback = Callable[[dict[str, Any]], Any]


def _empty_list(_: dict[str, Any]) -> list[Any]:
    return []


def _null_per_id(args: dict[str, Any]) -> list[None]:
    return [None] * len(args.get("ids") or ())


def _empty_connection(_: dict[str, Any]) -> dict[str, Any]:
    # Python field names: the connection types read their keys by them.
    return {"edges": [], "page_info": {"has_next_page": False, "end_cursor": None}}


def fallback_for(field_type: Any, arg_names: set[str]) -> Fallback | None:
    if not isinstance(field_type, GraphQLNonNull):
        return None  # a nullable field is simply null
    inner = field_type.of_type
    if isinstance(inner, GraphQLList):
        nullable_items = not isinstance(inner.of_type, GraphQLNonNull)
        return _null_per_id if nullable_items and "ids" in arg_names else _empty_list
    if (isinstance(inner, GraphQLObjectType) and inner.name.endswith("Connection")
            and {"edges", "pageInfo"} <= set(inner.fields)):
        return _empty_connection
    return None


def install_fallbacks(schema: GraphQLSchema) -> None:
    for type_ in schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        if type_ is schema.mutation_type or type_.name.endswith(("Payload", "Connection")):
            continue  # a write is never papered over; a page's own lists come from one call
        for field in type_.fields.values():
            fallback = fallback_for(field.type, set(field.args))
            if fallback is not None:
                field.extensions = {**(field.extensions or {}), FALLBACK: fallback}
                if field.resolve is not None and _has_permissions(field):
                    field.resolve = _denial_awaitable(field.resolve)


def _has_permissions(field: GraphQLField) -> bool:
    definition = (field.extensions or {}).get("strawberry-definition")
    return bool(getattr(definition, "permission_classes", None))


def _denial_awaitable(resolve: Callable[..., Any]) -> Callable[..., Any]:
    """A denied field's error, raised at once by its permission check, as a failed future:
    the executors then give the field its fallback (an empty list or page) instead of
    nulling its parent, as they do for an upstream failure."""

    def guarded(source: Any, info: Any, **args: Any) -> Any:
        try:
            return resolve(source, info, **args)
        except Forbidden as error:
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(error)
            return failed

    # Still a direct resolver if it was one: the plan executor may call it (a denial is a
    # failed future there too, completed with the fallback).
    if getattr(resolve, DIRECT, False):
        setattr(guarded, DIRECT, True)
    return guarded
