"""Every type, field, argument, input field and enum value of the served graph has a
description: what a developer reads in the IDE's docs panel (issue #7).

A missing one is named by its schema coordinate (`Product.price`, `Query.products(ids:)`,
`OrderStatus.PLACED`), so the failure says what to fill in, and where: `schema/types.py`,
`schema/root.py`, `resolvers/inputs.py` or `schema/directives.py`.
"""

from __future__ import annotations

from typing import cast

import pytest
import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    IntrospectionQuery,
    build_client_schema,
    get_introspection_query,
    is_specified_directive,
    is_specified_scalar_type,
)
from graphql import build_schema as build_sdl_schema

from resolvers import entities
from schema import build_schema
from schema.types import documented
from tests.conftest import GQL, data_of


def _described(description: str | None) -> bool:
    return bool(description and description.strip())


def undocumented(schema: GraphQLSchema) -> list[str]:
    """The coordinates of every type, field, argument, input field, enum value and custom
    directive of `schema` without a description (built-in scalars and directives, and the
    introspection types, are graphql's own). A custom directive's argument may instead be
    explained, by name in backquotes, in the directive's description: Strawberry gives schema
    directives' arguments no description of their own."""
    missing: list[str] = []
    for name, type_ in sorted(schema.type_map.items()):
        if name.startswith("__") or is_specified_scalar_type(type_):
            continue
        if not _described(type_.description):
            missing.append(name)
        if isinstance(type_, GraphQLEnumType):
            missing += [f"{name}.{value_name}" for value_name, value in type_.values.items()
                        if not _described(value.description)]
        if isinstance(type_, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
            for field_name, field in type_.fields.items():
                if not _described(field.description):
                    missing.append(f"{name}.{field_name}")
                missing += [f"{name}.{field_name}({arg_name}:)"
                            for arg_name, arg in getattr(field, "args", {}).items()
                            if not _described(arg.description)]
    for directive in schema.directives:
        if is_specified_directive(directive):
            continue
        text = directive.description or ""
        if not _described(text):
            missing.append(f"@{directive.name}")
        missing += [f"@{directive.name}({arg_name}:)" for arg_name, arg in directive.args.items()
                    if not _described(arg.description) and f"`{arg_name}`" not in text]
    return missing


def _report(missing: list[str]) -> str:
    return (f"{len(missing)} schema coordinate(s) without a description; the IDE's docs panel "
            "shows nothing for them. Add a `description=` in schema/:\n  "
            + "\n  ".join(missing))


def test_every_type_field_argument_and_enum_value_is_described() -> None:
    missing = undocumented(build_schema()._schema)
    assert not missing, _report(missing)


async def test_the_descriptions_reach_the_ide(gql: GQL) -> None:
    # What GraphiQL's docs panel reads: the introspection query, over HTTP, of a running
    # gateway, with the default limits a client meets.
    query = get_introspection_query(descriptions=True, input_value_deprecation=True)
    # (The answer's data is the introspection result: JSON, so a cast to its TypedDict.)
    served = build_client_schema(cast(IntrospectionQuery, data_of(await gql(query))))
    missing = undocumented(served)
    assert not missing, _report(missing)
    money, ours = served.type_map["Money"], build_schema()._schema.type_map["Money"]
    assert isinstance(money, GraphQLObjectType) and isinstance(ours, GraphQLObjectType)
    assert money.fields["amount"].description == ours.fields["amount"].description


def test_the_check_names_each_missing_coordinate() -> None:
    # The check itself: each kind of gap is reported by its coordinate, and nothing else is.
    schema = build_sdl_schema('''
        "Ok." directive @hint("Ok." seconds: Int, scope: String) on FIELD_DEFINITION
        "Ok." directive @bare(level: Int) on FIELD_DEFINITION
        "Ok." type Query {
          "Ok." products("Ok." first: Int, ids: [ID!]): [Product]
          price: Money
        }
        type Product { "   " name: String }
        "Ok." type Money { "Ok." amount: Int }
        "Ok." enum Status { "Ok." PLACED SHIPPED }
        "Ok." input Line { "Ok." productId: ID!  quantity: Int }
        interface Node { "Ok." id: ID! }
        union Result = Product | Money
        scalar Date
    ''')
    assert sorted(undocumented(schema)) == sorted([
        "Date", "Line.quantity", "Node", "Product", "Product.name", "Query.price",
        "Query.products(ids:)", "Result", "Status.SHIPPED", "@bare(level:)",
        "@hint(scope:)",
    ])


def test_argument_descriptions_name_arguments_the_resolver_has() -> None:
    # `documented` attaches argument descriptions by name: a typo, or an argument renamed in
    # resolvers/, must fail at import, not leave the argument undocumented.
    with pytest.raises(TypeError, match="firts"):
        documented(strawberry.field(resolver=entities.user_reviews), firts="How many.")
