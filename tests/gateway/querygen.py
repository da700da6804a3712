"""Valid query documents for the served schema, drawn by Hypothesis (tests/gateway/test_executor).

The generator walks the schema's types (graphql-core's, from `schema.build_schema()`) from
the Query root and writes a document as text: aliases (fresh ones, the same field under two
aliases with other arguments, and a response key repeated so that CollectFields merges it),
inline fragments with and without a type condition, named fragments (some spread twice),
@skip/@include with literals and variables (some with defaults and no value), __typename,
arguments (ids that exist and ids that don't, `first` from 0 up, out of range, null or
omitted), given inline or as variables.

Validity: every response key of a merged selection set (fragments flatten into their parent's)
is recorded in a `Scope` with its field name and arguments; a key is reused only for the same
field with the same arguments, whose sub-selection then shares the same child scope, so
OverlappingFieldsCanBeMerged always holds. Each variable is used once, so its type is its
position's. Size: a list multiplies `mult`; object fields are drawn only while the product
of the lists above stays small, so an answer stays a few hundred objects at most.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    get_named_type,
    is_leaf_type,
)
from hypothesis import strategies as st

# Fields behind permission classes: the plan executor checks them itself now
# (schema/direct_resolvers.py, _guarded), as Strawberry's path would. Drawn only in some
# queries, since the signed-in users of the examples see few of them.
FALLBACK_FIELDS = {("Query", "order"), ("User", "email"), ("User", "orders"),
                   ("User", "recommendations")}
# Seeded data (services.seed, seed 42, scale 1): p1..p5000, u1..u1000, c1..c50, o1..o10000.
ID_RANGES = {"product": ("p", 5000), "user": ("u", 1000), "category": ("c", 50),
             "order": ("o", 10000)}
MISSING_IDS = ("p-none", "u0", "c999", "", "x")
# Real sizes of the lists that take no `first`, for the size budget.
LIST_SIZES = {"Query.categories": 100}  # (50 in the data; the cost limit counts 100)
DEFAULT_LIST = 10  # what the cost limit counts for a list without `first`
MAX_DEPTH = 5
MAX_MULT = 40  # objects a selection may be repeated over before only leaves are drawn
MAX_FIELDS = 40  # fields a document may have before each selection set gets one leaf
MAX_ALIASES = 20  # aliases a document may have, as the gateway counts them (it allows 30)


@dataclass
class Scope:
    """The response keys of one merged selection set: key -> (field, arguments, child)."""

    keys: dict[str, tuple[str, str, Scope]] = field(default_factory=dict)


class Builder:
    def __init__(self, draw: Any, schema: GraphQLSchema, allow_fallback: bool) -> None:
        self.draw = draw
        self.schema = schema
        self.allow_fallback = allow_fallback
        self.count = 0
        self.fields = 0
        self.aliases = 0
        self.sizes: dict[int, int] = {}
        self.fragments: list[str] = []
        self.definitions: list[str] = []  # variable definitions
        self.variables: dict[str, Any] = {}

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def chance(self, one_in: int) -> bool:
        return self.draw(st.integers(0, one_in - 1)) == 0

    # -- variables and directives ---------------------------------------------------------------
    def variable(self, type_: str, value: Any) -> str:
        name = self.fresh("v")
        if self.chance(4):  # a default, and no value sent
            self.definitions.append(f"${name}: {type_.rstrip('!')} = {literal(value)}")
        else:
            self.definitions.append(f"${name}: {type_}")
            self.variables[name] = value
        return f"${name}"

    def value(self, type_: str, value: Any) -> str:
        if value is not None and self.chance(3):
            return self.variable(type_, value)
        return literal(value)

    def directives(self) -> str:
        if not self.chance(6):
            return ""
        parts = []
        names = self.draw(st.sampled_from([["skip"], ["include"], ["skip", "include"],
                                           ["include", "skip"]]))
        for name in names:
            condition = self.draw(st.booleans())
            parts.append(f" @{name}(if: {self.value('Boolean!', condition)})")
        return "".join(parts)

    # -- arguments ----------------------------------------------------------------------------
    def an_id(self, kind: str) -> str:
        prefix, count = ID_RANGES[kind]
        if self.chance(5):
            return self.draw(st.sampled_from(MISSING_IDS))
        return f"{prefix}{self.draw(st.integers(1, count))}"

    def arguments(self, parent: str, name: str, field_def: Any, mult: int) -> tuple[str, int]:
        """The arguments' text and how many items the field's list will hold at most."""
        parts: list[str] = []
        size = LIST_SIZES.get(f"{parent}.{name}", DEFAULT_LIST)
        for arg_name, arg in field_def.args.items():
            if arg_name == "id":
                kind = name if name in ID_RANGES else "product"
                parts.append(f"id: {self.value('ID!', self.an_id(kind))}")
            elif arg_name == "ids":
                kind = name.rstrip("s")
                ids = [self.an_id(kind) for _ in range(self.draw(st.integers(0, 4)))]
                if ids and self.chance(4):
                    ids.append(ids[0])  # a repeat
                parts.append(f"ids: {self.value('[ID!]!', ids)}")
                size = len(ids)
            elif arg_name == "first":
                # Out of range is an error; the cost limit still counts 101 of everything
                # under it, so 101 is drawn only where few lists are above.
                # The default (omitted or null) only where it keeps the lists' product small.
                default = arg.default_value
                small = mult * default <= MAX_MULT
                choice = self.draw(st.sampled_from(
                    ["omit" if small else 2, 0, 1, 1, 2, 2, 3, None if small else 1, -1,
                     101 if mult == 1 else -1]))
                if choice == "omit":
                    size = default
                    continue
                if choice is None:
                    size = default
                elif isinstance(choice, int):
                    size = choice if 0 <= choice <= 100 else max(choice, 1)
                parts.append(f"first: {self.value('Int', choice)}")
            elif arg_name == "after":
                if self.chance(6):
                    parts.append(f"after: {self.value('String', 'bogus-cursor')}")
        return (f"({', '.join(parts)})" if parts else ""), size

    # -- selections ---------------------------------------------------------------------------
    def selection_set(self, type_: GraphQLObjectType, scope: Scope, depth: int,
                      mult: int) -> str:
        items: list[str] = []
        full = self.fields >= MAX_FIELDS
        for _ in range(1 if full else self.draw(st.integers(1, 4))):
            kind = self.draw(st.sampled_from(
                ["field"] * 6 + ["inline", "typed-inline", "fragment", "repeat"]))
            if kind == "field" or depth >= MAX_DEPTH or full:
                items.append(self.field(type_, scope, depth, mult))
            elif kind in ("inline", "typed-inline"):
                on = f" on {type_.name}" if kind == "typed-inline" else ""
                inner = self.selection_set(type_, scope, depth + 1, mult)
                items.append(f"...{on}{self.directives()} {inner}")
            elif kind == "fragment":
                name = self.fresh("F")
                before = self.aliases
                inner = self.selection_set(type_, scope, depth + 1, mult)
                self.fragments.append(f"fragment {name} on {type_.name} {inner}")
                items.append(f"...{name}{self.directives()}")
                added = self.aliases - before  # the limit counts a spread's aliases each time
                if self.aliases + added <= MAX_ALIASES and self.chance(4):
                    self.aliases += added
                    items.append(f"...{name}{self.directives()}")
            elif scope.keys:  # repeat a key already in this set: CollectFields merges them
                key = self.draw(st.sampled_from(sorted(scope.keys)))
                items.append(self.field(type_, scope, depth, mult, repeat=key))
            else:
                items.append(self.field(type_, scope, depth, mult))
        return "{ " + " ".join(items) + " }"

    def field(self, type_: GraphQLObjectType, scope: Scope, depth: int, mult: int,
              repeat: str | None = None) -> str:
        if repeat is not None:
            name, args, child = scope.keys[repeat]
            if repeat != name:
                if self.aliases >= MAX_ALIASES:
                    return self.field(type_, scope, depth, mult)
                self.aliases += 1
            size = self.sizes.get(id(child), 1)
            return self.write(type_, repeat, name, args, child, depth, mult, size)
        self.fields += 1
        names = ["__typename"] + [
            n for n in type_.fields
            if self.allow_fallback or (type_.name, n) not in FALLBACK_FIELDS]
        if depth >= MAX_DEPTH or mult > MAX_MULT or self.fields >= MAX_FIELDS:
            names = [n for n in names if n == "__typename"
                     or is_leaf_type(get_named_type(type_.fields[n].type))]
        name = self.draw(st.sampled_from(names))
        if name == "__typename":
            args, size = "", 1
        else:
            args, size = self.arguments(type_.name, name, type_.fields[name], mult)
        key = name
        if (self.aliases < MAX_ALIASES and self.chance(3)) or (
                key in scope.keys and scope.keys[key][:2] != (name, args)):
            key = self.fresh("a")
            self.aliases += 1
        child = scope.keys[key][2] if key in scope.keys else Scope()
        scope.keys[key] = (name, args, child)
        self.sizes[id(child)] = size
        text = self.write(type_, key, name, args, child, depth, mult, size)
        if args and self.aliases < MAX_ALIASES and self.chance(4):
            # The same field under another alias, with other arguments.
            other, other_size = self.arguments(type_.name, name, type_.fields[name], mult)
            alias = self.fresh("a")
            self.aliases += 1
            other_child = Scope()
            scope.keys[alias] = (name, other, other_child)
            self.sizes[id(other_child)] = other_size
            text += " " + self.write(type_, alias, name, other, other_child, depth, mult,
                                     other_size)
        return text

    def write(self, type_: GraphQLObjectType, key: str, name: str, args: str, child: Scope,
              depth: int, mult: int, size: int) -> str:
        prefix = f"{key}: " if key != name else ""
        text = f"{prefix}{name}{args}{self.directives()}"
        if name == "__typename":
            return text
        field_type = type_.fields[name].type
        named = get_named_type(field_type)
        if is_leaf_type(named):
            return text
        assert isinstance(named, GraphQLObjectType)
        inner = field_type.of_type if isinstance(field_type, GraphQLNonNull) else field_type
        below = mult * max(size, 1) if isinstance(inner, GraphQLList) else mult
        return f"{text} {self.selection_set(named, child, depth + 1, below)}"


def literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):  # an input object
        return "{" + ", ".join(f"{k}: {literal(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@st.composite
def queries(draw: Any, schema: GraphQLSchema) -> tuple[str, dict[str, Any]]:
    """A valid query on `schema`'s Query root, and its variables."""
    builder = Builder(draw, schema, allow_fallback=draw(st.integers(0, 9)) == 0)
    query_type = schema.query_type
    assert query_type is not None
    body = builder.selection_set(query_type, Scope(), 0, 1)
    head = f"query Q({', '.join(builder.definitions)}) " if builder.definitions else ""
    document = " ".join([head + body, *builder.fragments])
    return document, builder.variables


# What the mutations' inputs are drawn from: existing products and not, ratings in and out
# of range, bodies empty or not; quantities from 0 (refused) to more than any stock.
MUTATION_FIELDS = ("addReview", "addReview", "placeOrder", "cancelOrder")


@st.composite
def mutations(draw: Any, schema: GraphQLSchema, tag: str) -> tuple[str, dict[str, Any]]:
    """A valid mutation on `schema`: one to three root fields, each with drawn inputs and a
    drawn selection of its payload (as `queries` draws a query's). `tag` makes the
    idempotency keys of this document its own (the same document, sent to two gateways,
    carries the same keys)."""
    builder = Builder(draw, schema, allow_fallback=draw(st.integers(0, 3)) == 0)
    mutation_type = schema.mutation_type
    assert mutation_type is not None
    fields = []
    for index in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(MUTATION_FIELDS))
        if name == "addReview":
            value: Any = {
                "productId": builder.an_id("product"),
                "rating": draw(st.sampled_from([1, 3, 5, 5, 0, 6])),
                "body": draw(st.sampled_from(["Good.", "Not for me.", " ", ""])),
            }
            if builder.chance(3):
                value["idempotencyKey"] = f"{tag}-{draw(st.integers(0, 2))}"
            argument = f"input: {builder.variable('AddReviewInput!', value)}"
        elif name == "placeOrder":
            items = [{"productId": builder.an_id("product"),
                      "quantity": draw(st.sampled_from([1, 1, 2, 0, 10_000]))}
                     for _ in range(draw(st.integers(0, 2)))]
            value = {"items": items, "idempotencyKey": f"{tag}-{index}"}
            argument = f"input: {builder.variable('PlaceOrderInput!', value)}"
        else:
            argument = f"id: {builder.value('ID!', builder.an_id('order'))}"
        payload = get_named_type(mutation_type.fields[name].type)
        assert isinstance(payload, GraphQLObjectType)
        selection = builder.selection_set(payload, Scope(), 1, 1)
        fields.append(f"m{index}: {name}({argument}) {selection}")
    head = f"mutation M({', '.join(builder.definitions)}) " if builder.definitions else \
        "mutation M "
    document = " ".join([head + "{ " + " ".join(fields) + " }", *builder.fragments])
    return document, builder.variables
