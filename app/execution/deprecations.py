"""Which deprecated fields an operation reads (their `Type.field` coordinates), for the
`Deprecation` header, the warning in `extensions` and the per-client usage metric.

Read from the document, not the response: a deprecated field the operation selects is used
whatever its value (a response-cache hit included). Kept per document text and operation
name, so a repeated operation costs a dictionary lookup."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    parse,
    visit,
)
from graphql.utilities import get_operation_ast


def deprecated_fields(schema: GraphQLSchema, query: str | None, operation_name: str | None,
                      max_tokens: int = 10_000) -> frozenset[str]:
    """The deprecated fields the operation selects (empty when it does not parse, or names
    no operation: it will be refused anyway)."""
    if not query:
        return frozenset()
    return _deprecated(schema, query, operation_name, max_tokens)


@lru_cache(maxsize=512)
def _deprecated(schema: GraphQLSchema, query: str, operation_name: str | None,
                max_tokens: int) -> frozenset[str]:
    try:
        document = parse(query, no_location=True, max_tokens=max_tokens)
    except GraphQLError:
        return frozenset()
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return frozenset()
    found: set[str] = set()
    type_info = TypeInfo(schema)

    class Fields(Visitor):
        def enter_field(self, node: FieldNode, *_: Any) -> None:
            field_def = type_info.get_field_def()
            parent = type_info.get_parent_type()
            if field_def is not None and field_def.deprecation_reason is not None \
                    and parent is not None:
                found.add(f"{parent.name}.{node.name.value}")

    visitor = TypeInfoVisitor(type_info, Fields())
    for definition in document.definitions:
        # The operation, and the fragments (validation refuses those it does not use).
        if definition is operation or isinstance(definition, FragmentDefinitionNode):
            visit(definition, visitor)
    return frozenset(found)
