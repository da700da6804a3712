"""Direct graphql-core resolvers for the fields that need nothing of Strawberry's per-call
machinery.

Strawberry wraps every field: a new `Info` per call, argument conversion, a chain of
closures built per call and, for async resolvers, an extra coroutine. On a deep query that is
thousands of calls and most of the gateway's CPU time. Our resolvers take
`(root, info, **arguments)` and use only `info.context`, which graphql-core's own resolve
info has, so for a field with only scalar arguments and no field extensions other than
synchronous permission classes (checked here as Strawberry would, `_guarded`), the resolver
is installed on the graphql-core field as it is, and a field without a resolver reads its
key. Everything else keeps Strawberry's path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import strawberry
from graphql import GraphQLField, GraphQLObjectType, get_named_type, is_input_object_type
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.types.field import StrawberryField

from app.core.errors import Forbidden
from app.execution.executor import DIRECT, KEY

Resolve = Callable[..., Any]


def _key_reader(key: str, inline: bool) -> Resolve:
    def resolve(source: Any, info: Any) -> Any:
        return source[key]

    if inline:
        setattr(resolve, KEY, key)  # the plan executor reads the key itself
    return resolve


def _event(source: Any, info: Any, **arguments: Any) -> Any:
    """A subscription field's value at an event: the entity the event names (its subscribe
    resolver and permissions ran once, when the client subscribed)."""
    return source


def _guarded(resolve: Resolve, permissions: list[BasePermission]) -> Resolve:
    """`resolve` behind the field's permission classes, checked as Strawberry's
    PermissionExtension checks them (each in order; the first that refuses raises, through
    its `on_unauthorized`), without Strawberry's per-call wrapping: so that a private field
    (`User.email`, `order(id)`) keeps a query on the plan executor."""

    def guarded(source: Any, info: Any, **arguments: Any) -> Any:
        for permission in permissions:
            allowed = permission.has_permission(source, info, **arguments)
            if allowed is not True:
                if allowed is not False:  # an awaitable or a non-boolean: fail closed
                    raise TypeError(f"{type(permission).__name__}.has_permission must "
                                    "return a boolean")
                permission.on_unauthorized()
                raise Forbidden(permission.message or "")  # if it did not raise itself
        return resolve(source, info, **arguments)

    return guarded


def _permissions(definition: StrawberryField) -> list[BasePermission] | None:
    """The field's permissions when its only extensions are plain, synchronous permission
    checks (what `_guarded` does as Strawberry would); else None: Strawberry's path."""
    permissions: list[BasePermission] = []
    for extension in definition.extensions:
        if not isinstance(extension, PermissionExtension) or extension.fail_silently:
            return None
        for permission in extension.permissions:
            if inspect.iscoroutinefunction(permission.has_permission):
                return None
            permissions.append(permission)
    return permissions


def _direct(field: GraphQLField, definition: StrawberryField, inline_keys: bool
            ) -> Resolve | None:
    if definition.is_subscription:
        return _event
    permissions = _permissions(definition)
    if permissions is None or any(
        is_input_object_type(get_named_type(arg.type)) for arg in field.args.values()
    ):
        return None
    resolve = _unguarded(definition, inline_keys and not permissions)
    if resolve is None or not permissions:
        return resolve
    return _guarded(resolve, permissions)


def _unguarded(definition: StrawberryField, inline_key: bool) -> Resolve | None:
    if definition.base_resolver is None:
        return _key_reader(definition.python_name, inline_key)
    fn = definition.base_resolver.wrapped_func
    if not callable(fn):
        return None  # a classmethod descriptor: Strawberry binds it
    params = list(inspect.signature(fn).parameters)
    if any(a.python_name != (a.graphql_name or a.python_name) for a in definition.arguments):
        return None  # graphql-core would pass arguments under other names
    if params[:2] == ["root", "info"]:
        return fn  # graphql-core calls resolve(source, info, **arguments)
    if params == ["root"]:
        return lambda source, info: fn(source)
    if params[:1] == ["info"]:
        return lambda source, info, **arguments: fn(info, **arguments)
    return None


def install_direct_resolvers(schema: strawberry.Schema, inline_keys: bool = True) -> int:
    """Replace Strawberry's wrappers where they add nothing; returns how many were replaced.
    With `inline_keys` off (every field traced), key reads are called like any resolver, so
    that resolver middleware sees them."""
    replaced = 0
    for name, graphql_type in schema._schema.type_map.items():
        if name.startswith("__") or not isinstance(graphql_type, GraphQLObjectType):
            continue
        for field in graphql_type.fields.values():
            definition = (field.extensions or {}).get("strawberry-definition")
            if not isinstance(definition, StrawberryField):
                continue
            resolve = _direct(field, definition, inline_keys)
            if resolve is not None:
                # Marked for the plan executor (app/execution/executor.py): it may call this
                # resolver with an info object that carries only the context.
                setattr(resolve, DIRECT, True)
                field.resolve = resolve
                replaced += 1
    return replaced
