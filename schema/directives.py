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
    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"


@strawberry.schema_directive(
    name="cacheControl",
    locations=[Location.FIELD_DEFINITION, Location.OBJECT, Location.INTERFACE, Location.UNION],
    description="How long, and by whom, data of this type or field may be cached.",
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
