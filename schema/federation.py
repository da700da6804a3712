"""The graph as an Apollo Federation v2 subgraph (FEDERATION_SUBGRAPH): `_service { sdl }` and
`_entities(representations:)` on Query, so that a supergraph router (Apollo Router, Apollo
Gateway, Cosmo, Hive Gateway...) can compose the gateway with other subgraphs.

Added beside the served types rather than through `strawberry.federation`, which would put
`@key` on the types themselves (and into the SDL every client sees, federation or not) and
resolve each reference on its own; here the types stay as they are, the subgraph SDL is the
served SDL with the federation spec's `@link` and a `@key` on each entity type, and
`_entities` resolves through the request's loaders (resolvers/federation.py). Off, nothing
here is in the schema.

`_entities` returns a union, so both executors answer it with graphql-core's field
execution (the plan executor plans object types only); its lookups batch all the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import strawberry
from graphql import (
    ConstArgumentNode,
    ConstDirectiveNode,
    DocumentNode,
    FieldDefinitionNode,
    GraphQLUnionType,
    ListValueNode,
    NameNode,
    ObjectTypeDefinitionNode,
    SchemaExtensionNode,
    StringValueNode,
    parse,
    print_ast,
)
from strawberry.types.scalar import ScalarDefinition

from resolvers.federation import BY_TYPE, TYPENAME, Representation, entities
from schema.types import Category, Order, Product, Review, User, documented

FEDERATION_URL = "https://specs.apollo.dev/federation/v2.3"
IMPORTS = ("@key",)
KEYS = {name: "id" for name in BY_TYPE}  # each entity type's @key(fields:)
# What the subgraph SDL leaves out: the federation fields and types are the router's to
# know (the spec: `_service` and `_entities` are not part of the subgraph's schema).
FEDERATION_FIELDS = frozenset({"_service", "_entities"})
FEDERATION_TYPES = frozenset({"_Any", "_Entity", "_Service"})

# The `_Any` scalar: a representation passes as the JSON object it is.
SCALARS: dict[object, ScalarDefinition] = {Representation: strawberry.scalar(
    name="_Any",
    description="A representation of an entity, as a federation router sends it: its "
    "`__typename` and its key, such as {\"__typename\": \"Product\", \"id\": \"p1\"}.",
    serialize=lambda value: value, parse_value=lambda value: value,
)}
Entity = Annotated[
    User | Product | Category | Order | Review,
    strawberry.union("_Entity", description="Every type a router may ask `_entities` for."),
]


@strawberry.type(name="_Service", description="This subgraph, for a federation router.")
class Service:
    sdl: str = strawberry.field(
        description="The subgraph's schema: the served SDL with the federation v2 `@link` and "
        "a `@key(fields: \"id\")` on User, Product, Category, Order and Review."
    )


def federated_query(query: type) -> tuple[type, Callable[[strawberry.Schema], None]]:
    """`query` (the Query type) with `_service` and `_entities`, and what completes them once
    the schema built with it exists: the union's items name their type, and `_service` has
    the schema's subgraph SDL."""
    sdl: list[str] = []

    def service() -> dict[str, str]:
        return {"sdl": sdl[0]}

    definition = query.__strawberry_definition__  # type: ignore[attr-defined]

    @strawberry.type(name="Query", description=definition.description)
    class FederatedQuery(query):
        federation_service: Service = documented(strawberry.field(
            name="_service", resolver=service,
            description="This subgraph's SDL, for a federation router to compose.",
        ))
        federation_entities: list[Entity | None] = documented(
            strawberry.field(
                name="_entities", resolver=entities,
                description="Entities by their key, for a federation router: one per "
                "representation, in order, resolved like the other root fields (batched: N "
                "of a type cost one upstream call) and with the same permissions (an Order "
                "needs read:orders and is the caller's own). Null where there is none; an "
                "error at `_entities.<i>` for a representation of an unknown type or without "
                "an `id`.",
            ),
            representations="The entities' representations: `__typename` and `id`. Their "
            "number multiplies the query cost of the selection.",
        )

    def complete(schema: strawberry.Schema) -> None:
        union = schema._schema.type_map["_Entity"]
        assert isinstance(union, GraphQLUnionType)
        # The union and the resolver's table name the same types (a type added to one only
        # would be keyed but not resolved, or the other way round).
        assert {t.name for t in union.types} == set(BY_TYPE), union.types
        union.resolve_type = _resolve_type
        sdl.append(subgraph_sdl(parse(schema.as_str())))

    return FederatedQuery, complete


def _resolve_type(value: Any, info: Any, abstract_type: Any) -> str:
    return str(value[TYPENAME])  # set by resolvers/federation.py


def subgraph_sdl(served: DocumentNode) -> str:
    """The subgraph SDL of the served schema's AST: without the federation fields and
    types, with `@link` to the federation spec and each entity type's `@key`."""
    definitions: list[Any] = [SchemaExtensionNode(directives=(_directive("link", {
        "url": StringValueNode(value=FEDERATION_URL),
        "import": ListValueNode(values=tuple(StringValueNode(value=i) for i in IMPORTS)),
    }),), operation_types=())]
    for node in served.definitions:
        name = getattr(getattr(node, "name", None), "value", None)
        if name in FEDERATION_TYPES:
            continue
        if isinstance(node, ObjectTypeDefinitionNode):
            fields: tuple[FieldDefinitionNode, ...] = tuple(
                f for f in node.fields or () if f.name.value not in FEDERATION_FIELDS)
            directives = tuple(node.directives or ())
            if name in KEYS:
                key = _directive("key", {"fields": StringValueNode(value=KEYS[name])})
                directives = (key, *directives)
            node = ObjectTypeDefinitionNode(
                name=node.name, description=node.description, interfaces=node.interfaces,
                directives=directives, fields=fields)
        definitions.append(node)
    return print_ast(DocumentNode(definitions=tuple(definitions))) + "\n"


def _directive(name: str, arguments: dict[str, Any]) -> ConstDirectiveNode:
    return ConstDirectiveNode(name=NameNode(value=name), arguments=tuple(
        ConstArgumentNode(name=NameNode(value=k), value=v) for k, v in arguments.items()))
