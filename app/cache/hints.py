"""`@cacheControl` hints: read from the served schema, overridden by settings, and turned into
entity TTLs and a response's Cache-Control.

A response's policy follows Apollo Server's rules: a field without its own hint takes its
return type's; root fields and object-typed fields without either default to maxAge 0, and
scalar fields inherit their parent's; `inheritMaxAge` makes a field inherit its parent's;
the smallest maxAge wins and any PRIVATE makes the response PRIVATE. It is computed once per
operation from the document (no per-field hook on the hot path), so fields under a null
parent still count: the policy can only be stricter than Apollo's, never looser. A resolver
may lower its own field's hint at run time through `RequestPolicy.restrict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLCompositeType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    NamedTypeNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    build_schema,
    get_named_type,
    is_composite_type,
    value_from_ast_untyped,
)

from app.config.settings import SettingsError

PUBLIC = "PUBLIC"
PRIVATE = "PRIVATE"


@dataclass(frozen=True)
class Hint:
    max_age: int | None = None
    scope: str | None = None
    inherit_max_age: bool = False


@dataclass(frozen=True)
class Policy:
    """A response's cache policy: max-age in seconds (None: no constraint yet) and scope."""

    max_age: float | None = None
    scope: str = PUBLIC

    def restrict(self, max_age: float | None = None, scope: str | None = None) -> Policy:
        age = self.max_age if max_age is None else (
            max_age if self.max_age is None else min(self.max_age, max_age))
        return Policy(age, PRIVATE if PRIVATE in (self.scope, scope) else PUBLIC)

    def merge(self, other: Policy) -> Policy:
        return self.restrict(other.max_age, other.scope)

    def header(self) -> str:
        age = 0 if self.max_age is None else math.floor(self.max_age)
        if age <= 0:
            return "no-store"
        return f"max-age={age}, {'private' if self.scope == PRIVATE else 'public'}"


NO_STORE = Policy(0, PUBLIC)


@dataclass
class RequestPolicy:
    """The policy of the response being built: the operation's, lowered at run time by
    resolvers (dynamic hints) and by stale data served on an upstream error."""

    dynamic: Policy = field(default_factory=Policy)
    stale: bool = False
    # A write's evictions could not reach the other replicas before the answer (Redis down).
    evictions_held: bool = False

    def restrict(self, max_age: float | None = None, scope: str | None = None) -> None:
        self.dynamic = self.dynamic.restrict(max_age, scope)


class _Same:
    """A document as a cache key by its identity (it is kept by the key, so its id is not
    reused while the entry lives)."""

    __slots__ = ("document",)

    def __init__(self, document: DocumentNode) -> None:
        self.document = document

    def __hash__(self) -> int:
        return id(self.document)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.document is self.document


class CacheHints:
    def __init__(self, sdl: str, overrides: str = "") -> None:
        self.schema: GraphQLSchema = build_schema(sdl)
        self.hints: dict[str, Hint] = _read_hints(self.schema)
        for coordinate, raw in (orjson.loads(overrides) if overrides else {}).items():
            self.hints[coordinate] = _override(self.schema, coordinate, raw,
                                               self.hints.get(coordinate, Hint()))
        self._policy = lru_cache(maxsize=512)(self._operation_policy)

    def hint(self, coordinate: str) -> Hint:
        return self.hints.get(coordinate, Hint())

    def entity_hint(self, coordinate: str) -> Hint:
        """The hint that sets the TTL of data cached for `coordinate`: a type (`Product`) or
        a field (`Product.reviews`), combined with its return type's hint."""
        if "." not in coordinate:
            return self.hints.get(coordinate, Hint())
        type_name, field_name = coordinate.split(".", 1)
        graphql_type = self.schema.type_map[type_name]
        assert isinstance(graphql_type, GraphQLObjectType)
        named = get_named_type(graphql_type.fields[field_name].type)
        return _combined(self.hints.get(named.name) if is_composite_type(named) else None,
                         self.hints.get(coordinate))

    def ttl(self, coordinate: str) -> int:
        return self.entity_hint(coordinate).max_age or 0

    def scope(self, coordinate: str) -> str:
        return self.entity_hint(coordinate).scope or PUBLIC

    def operation_policy(self, document: DocumentNode, operation_name: str | None) -> Policy:
        # Keyed by the document's identity: graphql-core hashes a document by walking all of
        # it, on every lookup. The operation cache hands the same document for the same text.
        return self._policy(_Same(document), operation_name)

    def _operation_policy(self, same: _Same, operation_name: str | None) -> Policy:
        document = same.document
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        operation = next(
            (o for o in operations if operation_name is None or
             (o.name and o.name.value == operation_name)), None)
        if operation is None or operation.operation != OperationType.QUERY:
            return NO_STORE
        fragments = {d.name.value: d for d in document.definitions
                     if isinstance(d, FragmentDefinitionNode)}
        root = self.schema.query_type
        assert root is not None
        return self._walk(operation.selection_set, root, None, fragments, True, set())

    def _walk(self, selection_set: SelectionSetNode, parent: GraphQLCompositeType,
              parent_age: float | None, fragments: Mapping[str, Any], is_root: bool,
              seen: set[str]) -> Policy:
        policy = Policy()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                if name.startswith("__"):
                    continue
                # (A union has no fields but __typename: its members' come in fragments.)
                field_def = getattr(parent, "fields", {}).get(name)
                if field_def is None:
                    continue
                named = get_named_type(field_def.type)
                composite = is_composite_type(named)
                hint = _combined(self.hints.get(named.name) if composite else None,
                                 self.hints.get(f"{parent.name}.{name}"))
                if hint.max_age is not None:
                    age: float | None = hint.max_age
                elif hint.inherit_max_age or not (composite or is_root):
                    age = parent_age
                else:
                    age = 0
                policy = policy.restrict(age, hint.scope)
                if composite and selection.selection_set is not None:
                    policy = policy.merge(self._walk(selection.selection_set, named, age,
                                                     fragments, False, seen))
            elif isinstance(selection, InlineFragmentNode):
                policy = policy.merge(self._walk(
                    selection.selection_set, self._on(selection.type_condition, parent),
                    parent_age, fragments, is_root, seen))
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is not None and name not in seen:
                    policy = policy.merge(self._walk(
                        fragment.selection_set, self._on(fragment.type_condition, parent),
                        parent_age, fragments, is_root, seen | {name}))
        return policy

    def _on(self, condition: NamedTypeNode | None, parent: GraphQLCompositeType
            ) -> GraphQLCompositeType:
        """The type a fragment's fields are read on: its condition's (a union's member, such
        as `... on Product` under `_entities`), else the enclosing type."""
        if condition is None:
            return parent
        named = self.schema.get_type(condition.name.value)
        return named if is_composite_type(named) else parent


def _combined(type_hint: Hint | None, field_hint: Hint | None) -> Hint:
    """A field's effective hint: its return type's, then its own wherever it sets something
    (Apollo's order), so a field's maxAge keeps its type's scope and the other way round."""
    max_age, scope, inherit = None, None, False
    for hint in (type_hint, field_hint):
        if hint is None:
            continue
        if hint.max_age is not None:
            max_age, inherit = hint.max_age, False
        if hint.inherit_max_age:
            max_age, inherit = None, True
        if hint.scope is not None:
            scope = hint.scope
    return Hint(max_age, scope, inherit)


def _read_hints(schema: GraphQLSchema) -> dict[str, Hint]:
    hints: dict[str, Hint] = {}

    def from_node(node: Any) -> Hint | None:
        for directive in getattr(node, "directives", None) or ():
            if directive.name.value == "cacheControl":
                args = {a.name.value: value_from_ast_untyped(a.value) for a in directive.arguments}
                return Hint(args.get("maxAge"), args.get("scope"),
                            bool(args.get("inheritMaxAge")))
        return None

    for name, graphql_type in schema.type_map.items():
        if name.startswith("__") or graphql_type.ast_node is None:
            continue
        hint = from_node(graphql_type.ast_node)
        if hint is not None:
            hints[name] = hint
        for field_name, field_def in getattr(graphql_type, "fields", {}).items():
            hint = from_node(field_def.ast_node)
            if hint is not None:
                hints[f"{name}.{field_name}"] = hint
    return hints


def _override(schema: GraphQLSchema, coordinate: str, raw: Mapping[str, Any], base: Hint) -> Hint:
    type_name, _, field_name = coordinate.partition(".")
    graphql_type = schema.type_map.get(type_name)
    if graphql_type is None or (field_name and field_name not in getattr(graphql_type,
                                                                          "fields", {})):
        raise SettingsError(f"CACHE_HINTS names {coordinate!r}, which the schema does not have")
    unknown = set(raw) - {"maxAge", "scope", "inheritMaxAge"}
    max_age = raw.get("maxAge", base.max_age)
    scope = raw.get("scope", base.scope)
    if unknown or not (max_age is None or (isinstance(max_age, int) and max_age >= 0)) or \
            scope not in (None, PUBLIC, PRIVATE):
        raise SettingsError(f"CACHE_HINTS[{coordinate!r}] is not a valid hint: {dict(raw)}")
    return Hint(max_age, scope, bool(raw.get("inheritMaxAge", base.inherit_max_age)))
