"""`@cacheControl`, Apollo-style cache hints on types and fields.

Declared here with the contract's defaults applied in `schema/types.py` and `schema/root.py`.
What they mean for cached data and the response's Cache-Control is the caching component's
job; the hints themselves live on the schema, where a reader of the SDL sees them.
"""

from __future__ import annotations

from enum import Enum

import strawberry
from strawberry import UNSET
from strawberry.schema_directive import Location


@strawberry.enum(description="Who may cache a response: any cache, or only the caller's own.")
class CacheControlScope(Enum):
    PUBLIC = strawberry.enum_value(
        "PUBLIC",
        description="Any cache may keep it, shared ones (a CDN, a proxy) included: the data is "
        "the same whoever asks.",
    )
    PRIVATE = strawberry.enum_value(
        "PRIVATE",
        description="Only the caller's own cache (such as the browser's) may keep it: the data "
        "depends on who asks.",
    )


# Strawberry gives a schema directive's arguments no description of their own, so the
# directive's description explains each of them.
@strawberry.schema_directive(
    name="cacheControl",
    locations=[Location.FIELD_DEFINITION, Location.OBJECT, Location.INTERFACE, Location.UNION],
    description="How long, and by whom, data of this type or field may be cached (Apollo "
    "Server's cache hints). `maxAge`: seconds the data may be reused (0: not cached). `scope`: "
    "PUBLIC (any cache) or PRIVATE (only the caller's own). `inheritMaxAge`: take the parent "
    "field's maxAge instead of a default. A field without a hint takes its type's; a "
    "response's Cache-Control header has the smallest maxAge of the fields it holds, and is "
    "private if any of them is PRIVATE. These are defaults: the operator may change them.",
)
class CacheControl:
    max_age: int | None = UNSET
    scope: CacheControlScope | None = UNSET
    inherit_max_age: bool | None = UNSET


def cache(
    max_age: int | None = UNSET,
    scope: CacheControlScope | None = UNSET,
    inherit_max_age: bool | None = UNSET,
) -> list[object]:
    """The `directives=` value of a hinted type or field."""
    return [CacheControl(max_age=max_age, scope=scope, inherit_max_age=inherit_max_age)]


PRIVATE = CacheControlScope.PRIVATE


# Demand control by the IBM GraphQL Cost Directives specification, as Apollo Router, Hive
# Gateway, Grafbase and Cosmo read them: the estimated and actual costs are computed from
# these (app/execution/limits.py), so client tooling computes the same figures from the SDL.
@strawberry.schema_directive(
    name="cost",
    locations=[Location.ARGUMENT_DEFINITION, Location.ENUM, Location.FIELD_DEFINITION,
               Location.INPUT_FIELD_DEFINITION, Location.OBJECT, Location.SCALAR],
    description="The cost of this field, type or argument (IBM GraphQL Cost Directives). "
    "`weight`: what one instance costs, instead of the default (an object 1, a scalar or enum "
    "0; an argument, when given, adds its weight).",
)
class Cost:
    weight: int


@strawberry.schema_directive(
    name="listSize",
    locations=[Location.FIELD_DEFINITION],
    description="How many items a list field returns, for its cost (IBM GraphQL Cost "
    "Directives). `slicingArguments`: the arguments that give its size (an Int's value, a "
    "list's length; the largest when several are given). `assumedSize`: its size when no "
    "slicing argument says. `sizedFields`: the fields of its type that hold the items (a "
    "connection's `edges`), sized by this field's slicing argument. "
    "`requireOneSlicingArgument`: exactly one slicing argument must be given (defaults count).",
)
class ListSize:
    assumed_size: int | None = UNSET
    slicing_arguments: list[str] | None = UNSET
    sized_fields: list[str] | None = UNSET
    require_one_slicing_argument: bool | None = True


def sliced_by(argument: str, sized_fields: list[str] | None = None) -> ListSize:
    """A list (or a connection, through `sized_fields`) sized by one argument."""
    return ListSize(slicing_arguments=[argument],
                    sized_fields=sized_fields if sized_fields is not None else UNSET,
                    require_one_slicing_argument=UNSET)  # (the default, not printed)


def assumed(size: int) -> ListSize:
    """A list of about `size` items, whatever the query asks."""
    return ListSize(assumed_size=size, require_one_slicing_argument=UNSET)
