"""Authorization, in one place: Strawberry permission classes on the schema's fields, and the
one rule that needs the loaded object (whose order it is).

- `User.email`, `User.orders` and `User.recommendations` are the user's own, or an admin's;
  orders also need the `read:orders` scope.
- Mutations need their write scope; they act as the caller (`RequestContext.require_user`).
- `order(id)` needs `read:orders`; someone else's order reads as if it did not exist.

A denied field is null with FORBIDDEN (a non-null list or connection: empty, through the
partial-result fallbacks of `schema/partial.py`), and the rest of the response stands. An
anonymous caller asking for something that needs a signed-in user gets UNAUTHENTICATED.
"""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from app.core.errors import Forbidden, Unauthenticated
from app.execution.context import Info


class _Permission(BasePermission):
    def on_unauthorized(self) -> None:
        # Classified as FORBIDDEN (app/execution/errors.py). Raised here rather than named as
        # `error_class`, which Strawberry types as a GraphQLError subclass.
        raise Forbidden(self.message or "")


class IsSelf(_Permission):
    """The field belongs to a user: only that user, or an admin, may read it."""

    message = "Only the user themself (or an admin) may read this field"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        viewer = info.context.viewer
        return source is not None and (viewer.admin or (
            viewer.id is not None and source.get("id") == viewer.id))


class OwnOrders(IsSelf):
    message = "Only the user themself (or an admin), with the read:orders scope, may read orders"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return info.context.viewer.may("read:orders") and super().has_permission(
            source, info, **kwargs)


def requires(scope: str) -> type[BasePermission]:
    """A permission for a signed-in caller holding `scope` (or admin)."""

    class Requires(_Permission):
        message = f"This needs the {scope} scope"

        def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
            viewer = info.context.viewer
            if viewer.id is None:
                raise Unauthenticated(f"Sign in (a bearer token with {scope}) to do this")
            return viewer.may(scope)

    Requires.__name__ = f"Requires_{scope.replace(':', '_')}"
    return Requires
