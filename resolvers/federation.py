"""`_entities`: the entities a federation router asks this subgraph for, by their keys.

Each representation (`{"__typename": "Product", "id": "p1"}`) is looked up through the same
by-id loader as `product(id:)`, and every lookup is issued before any is awaited, so N
representations of one type cost one batched upstream call (fewer when cached). Fields
under an entity resolve as anywhere else, with their permissions (`User.email` is the
user's own); an Order follows `order(id:)`'s rule: a signed-in caller with read:orders,
and someone else's order reads as null.
"""

from __future__ import annotations

from typing import Any, NewType

from app.core.errors import BadUserInput, Forbidden, Unauthenticated
from app.execution.context import Info
from loaders.declarations import CATEGORY, ORDER, PRODUCT, REVIEW, USER
from loaders.spec import BatchSpec, Item

# The entity types a router may ask for, each by its `id` (the `@key` of schema/federation.py).
BY_TYPE: dict[str, BatchSpec] = {
    "User": USER, "Product": PRODUCT, "Category": CATEGORY, "Order": ORDER, "Review": REVIEW,
}
TYPENAME = "__typename"  # how the `_Entity` union tells an item's type (schema/federation.py)
ORDERS_SCOPE = "read:orders"

# The argument's type, declared by the signature as resolvers/inputs.py does for mutations:
# the federation spec's `_Any` scalar (schema/federation.py maps it).
Representation = NewType("Representation", object)


def entities(info: Info, representations: list[Representation]) -> list[Any]:
    """One entry per representation, in order: the entity (or its pending lookup), None
    when there is none (or the caller may not see it), or the error for that entry alone."""
    context = info.context
    max_id = context.settings.max_id_length
    out: list[Any] = []
    for index, representation in enumerate(representations):
        try:
            typename, key = _reference(representation, index, max_id)
            spec = BY_TYPE[typename]
            if spec is ORDER:
                _may_read_orders(info)
            out.append(context.loaders.then(spec, key, _typed(typename, info)))
        except (BadUserInput, Unauthenticated, Forbidden) as error:
            out.append(error)  # graphql-core reports it at `_entities.<index>`
    return out


def _reference(representation: Any, index: int, max_id: int) -> tuple[str, str]:
    where = f"representations.{index}"
    if not isinstance(representation, dict):
        raise BadUserInput(f"{where} is not an object", field=where)
    typename = representation.get(TYPENAME)
    if typename not in BY_TYPE:
        raise BadUserInput(f"{where} names no entity type of this subgraph: {typename!r} "
                           f"(expected one of {', '.join(BY_TYPE)})", field=where)
    key = representation.get("id")
    if not isinstance(key, str) or not key:
        raise BadUserInput(f"{where} has no `id` (the key of {typename})", field=where)
    if len(key) > max_id:
        raise BadUserInput(f"{where}'s id is {len(key)} characters long, over the limit of "
                           f"{max_id} for an ID", field=where, limit=max_id, actual=len(key))
    return typename, key


def _may_read_orders(info: Info) -> None:
    # The same rule, and the same codes, as the `order(id:)` field's permission.
    viewer = info.context.viewer
    if viewer.id is None:
        raise Unauthenticated(f"Sign in (a bearer token with {ORDERS_SCOPE}) to do this")
    if not viewer.may(ORDERS_SCOPE):
        raise Forbidden(f"This needs the {ORDERS_SCOPE} scope")


def _typed(typename: str, info: Info) -> Any:
    """The loaded item as an `_Entity`: a copy that names its type (the loaders' items are
    shared with the request and the entity cache, so they are never written to)."""
    if typename == "Order":
        viewer = info.context.viewer

        def order(item: Item | None) -> Item | None:
            # Someone else's order reads as if it did not exist, as with `order(id:)`.
            if item is None or not viewer.owns(item):
                return None
            return {**item, TYPENAME: typename}

        return order

    def typed(item: Item | None) -> Item | None:
        return None if item is None else {**item, TYPENAME: typename}

    return typed
