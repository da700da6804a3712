"""Query limits, checked once the document is parsed and valid and before any resolver runs:
depth, aliases and cost (with the request's variables), one pass over the operation. The
token limit is Strawberry's MaxTokensLimiter (it stops the parser itself).

Cost: every field costs 1; a field with a `first` or `ids` argument multiplies the cost of
the selections under it by that number (`first`'s schema default when the query does not
give it), so `topProducts(first: 10) { reviews(first: 5) { author { name } } }` costs
1 + 10 x (1 + 5 x (1 + 1)) = 111. Lists without such an argument (an order's items, a
connection's edges) are bounded by what they belong to and count once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
)
from graphql.execution.values import get_argument_values, get_variable_values
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult

MULTIPLIERS = ("first", "ids")


@dataclass
class Measure:
    depth: int = 0
    aliases: int = 0
    cost: int = 0


class Measurer:
    def __init__(self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode],
                 variables: Any) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.aliases = 0
        self.depth = 0

    def selection_cost(self, selection_set: SelectionSetNode | None, parent: Any,
                       depth: int, spreads: tuple[str, ...] = ()) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field_cost(selection, parent, depth)
            elif isinstance(selection, InlineFragmentNode):
                on = (self.schema.get_type(selection.type_condition.name.value)
                      if selection.type_condition else parent)
                total += self.selection_cost(selection.selection_set, on, depth, spreads)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in spreads:
                    continue  # validation reports unknown fragments and cycles
                on = self.schema.get_type(fragment.type_condition.name.value)
                total += self.selection_cost(fragment.selection_set, on, depth,
                                             (*spreads, name))
        return total

    def field_cost(self, node: FieldNode, parent: Any, depth: int) -> int:
        if node.alias is not None and node.alias.value != node.name.value:
            self.aliases += 1
        self.depth = max(self.depth, depth + 1)
        fields = getattr(parent, "fields", None)
        field_def = fields.get(node.name.value) if fields else None
        if field_def is None:  # __typename, introspection
            return 1
        multiplier = 1
        if any(name in field_def.args for name in MULTIPLIERS):
            args = get_argument_values(field_def, node, self.variables)
            for name in MULTIPLIERS:
                value = args.get(name)
                if isinstance(value, int) and not isinstance(value, bool):
                    multiplier = max(multiplier, value)
                elif isinstance(value, list):
                    multiplier = max(multiplier, len(value))
        named = get_named_type(field_def.type)
        children = self.selection_cost(node.selection_set, named, depth + 1)
        return 1 + multiplier * children


def measure(schema: GraphQLSchema, operation: OperationDefinitionNode,
            fragments: dict[str, FragmentDefinitionNode], inputs: dict[str, Any]
            ) -> Measure | None:
    """The operation's figures; None when its variables do not coerce (execution then
    reports them as the client's error)."""
    variables = get_variable_values(schema, operation.variable_definitions or (), inputs)
    if isinstance(variables, list):
        return None
    root: GraphQLObjectType | None = schema.get_root_type(operation.operation)
    measurer = Measurer(schema, fragments, variables)
    cost = measurer.selection_cost(operation.selection_set, root, 0)
    return Measure(measurer.depth, measurer.aliases, cost)


class QueryLimits(SchemaExtension):
    """Refuses an operation over a limit with QUERY_TOO_COMPLEX and the figures."""

    def __init__(self, *, max_depth: int, max_aliases: int, max_cost: int) -> None:
        super().__init__()
        self.limits = {"depth": max_depth, "aliases": max_aliases, "cost": max_cost}

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        if document is not None and ec.result is None:
            operations = [d for d in document.definitions
                          if isinstance(d, OperationDefinitionNode)]
            fragments = {d.name.value: d for d in document.definitions
                         if isinstance(d, FragmentDefinitionNode)}
            operation = next((o for o in operations if ec.operation_name is None
                              or (o.name and o.name.value == ec.operation_name)), None)
            if operation is not None:
                figures = measure(ec.schema._schema, operation, fragments,
                                  ec.variables or {})
                if figures is not None:
                    context = ec.context
                    if hasattr(context, "cost"):
                        context.cost = figures.cost  # what the rate limit counts
                    for name, limit in self.limits.items():
                        actual = getattr(figures, name)
                        if actual > limit:
                            ec.result = ExecutionResult(data=None, errors=[GraphQLError(
                                f"The operation's {name} is {actual}, over the limit of "
                                f"{limit}", extensions={
                                    "code": "QUERY_TOO_COMPLEX", "measure": name,
                                    "limit": limit, "actual": actual})])
                            break
        yield
