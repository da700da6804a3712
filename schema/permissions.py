"""Field authorization, declared on the schema with Strawberry permission classes.

Until authentication with scopes lands, the viewer is the development-mode user. A denied
field is null (or nulls its nearest nullable parent) with a FORBIDDEN error.
"""

from __future__ import annotations

from typing import Any, ClassVar

from strawberry.permission import BasePermission

from app.context import Info


class IsSelf(BasePermission):
    """The field belongs to a user and only that user may read it."""

    message = "Only the user themself may read this field"
    error_extensions: ClassVar[dict[str, Any]] = {"code": "FORBIDDEN"}  # type: ignore[misc]

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return source is not None and source.get("id") == info.context.user_id
