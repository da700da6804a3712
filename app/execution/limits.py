"""Query limits, checked once the document is parsed and valid and before any resolver runs:
the length of the strings it gives (its literals: `length_rule`, a validation rule; its
variables: `oversized`), then depth, aliases and cost (with the
request's variables), one pass over the operation. The token limit is Strawberry's
MaxTokensLimiter (it stops the parser itself).

Lengths: an ID longer than MAX_ID_LENGTH or any other string longer than MAX_STRING_LENGTH,
as a literal or in the variables, refuses the request with BAD_USER_INPUT before anything is
sent upstream (a 100 KB id would otherwise reach a service, whose 400 then reads as the
service's fault).

Cost: every field costs 1; a field with a `first` or `ids` argument multiplies the cost of
the selections under it by that number (`first`'s schema default when the query does not
give it, or gives null), so `topProducts(first: 10) { reviews(first: 5) { author { name } } }`
costs 1 + 10 x (1 + 5 x (1 + 1)) = 111. Other lists count as LIST_SIZE items (a
connection's edges are counted by its `first`). A federation router's `_entities` counts its
`representations` the same way (schema/federation.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SchemaMetaFieldDef,
    SelectionSetNode,
    StringValueNode,
    TypeMetaFieldDef,
    TypeNameMetaFieldDef,
    get_named_type,
    get_nullable_type,
    is_input_object_type,
    is_list_type,
    type_from_ast,
)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.validation import ValidationRule
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult

MULTIPLIERS = ("first", "ids", "representations")
# A list with no `first` or `ids` (an order's items, a product's images...) is assumed to
# hold this many; a few are known to hold more. A connection's edges are counted by its
# `first`, above them.
LIST_SIZE = 10
LIST_SIZES = {"Query.categories": 100}
META_FIELDS = {"__schema": SchemaMetaFieldDef, "__type": TypeMetaFieldDef,
               "__typename": TypeNameMetaFieldDef}


@dataclass
class Measure:
    depth: int = 0
    aliases: int = 0
    cost: int = 0


class Measurer:
    """One walk of an operation. Each fragment is measured once (per type it is spread
    on), so a document whose fragments spread each other twice over costs its size to
    measure, not 2^n; introspection is measured like the rest (its lists count once: the
    schema bounds them), except for depth (the IDE's own query nests `ofType` deeply)."""

    def __init__(self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode],
                 variables: Any) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self._memo: dict[tuple[str, str], Measure] = {}
        self._open: set[str] = set()

    def selections(self, selection_set: SelectionSetNode | None, parent: Any,
                   meta: bool) -> Measure:
        """Cost, depth (levels of fields) and aliases of a selection set."""
        total = Measure()
        if selection_set is None:
            return total
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                part = self.field(selection, parent, meta)
            elif isinstance(selection, InlineFragmentNode):
                on = (self.schema.get_type(selection.type_condition.name.value)
                      if selection.type_condition else parent)
                part = self.selections(selection.selection_set, on, meta)
            elif isinstance(selection, FragmentSpreadNode):
                part = self.spread(selection.name.value, meta)
            else:
                continue
            total.cost += part.cost
            total.aliases += part.aliases
            total.depth = max(total.depth, part.depth)
        return total

    def spread(self, name: str, meta: bool) -> Measure:
        fragment = self.fragments.get(name)
        if fragment is None or name in self._open:
            return Measure()  # validation reports unknown fragments and cycles
        key = (name, "meta" if meta else "")
        found = self._memo.get(key)
        if found is None:
            self._open.add(name)
            on = self.schema.get_type(fragment.type_condition.name.value)
            found = self._memo[key] = self.selections(fragment.selection_set, on, meta)
            self._open.discard(name)
        return found

    def field(self, node: FieldNode, parent: Any, meta: bool) -> Measure:
        name = node.name.value
        aliases = 1 if node.alias is not None and node.alias.value != name else 0
        field_def = META_FIELDS.get(name) or (getattr(parent, "fields", None) or {}).get(name)
        if field_def is None:
            return Measure(1, aliases, 1)
        meta = meta or name.startswith("__")
        multiplier = 1 if meta else self.multiplier(node, field_def, parent, name)
        children = self.selections(node.selection_set, get_named_type(field_def.type), meta)
        return Measure(0 if meta else 1 + children.depth, aliases + children.aliases,
                       1 + multiplier * children.cost)

    def multiplier(self, node: FieldNode, field_def: Any, parent: Any, name: str) -> int:
        if any(arg in field_def.args for arg in MULTIPLIERS):
            args = get_argument_values(field_def, node, self.variables)
            multiplier = 1
            for arg in MULTIPLIERS:
                if arg not in field_def.args:
                    continue
                value = args.get(arg)
                if value is None:  # an explicit null: the resolver uses the default
                    value = field_def.args[arg].default_value
                if isinstance(value, int) and not isinstance(value, bool):
                    multiplier = max(multiplier, value)
                elif isinstance(value, list):
                    multiplier = max(multiplier, len(value))
                elif arg == "first":
                    multiplier = max(multiplier, LIST_SIZE)
            return multiplier
        if is_list_type(get_nullable_type(field_def.type)) \
                and not str(getattr(parent, "name", "")).endswith("Connection"):
            return LIST_SIZES.get(f"{parent.name}.{name}", LIST_SIZE)
        return 1


def measure(schema: GraphQLSchema, operation: OperationDefinitionNode,
            fragments: dict[str, FragmentDefinitionNode], inputs: dict[str, Any]
            ) -> Measure | None:
    """The operation's figures; None when its variables do not coerce (execution then
    reports them as the client's error)."""
    variables = get_variable_values(schema, operation.variable_definitions or (), inputs)
    if isinstance(variables, list):
        return None
    root: GraphQLObjectType | None = schema.get_root_type(operation.operation)
    return Measurer(schema, fragments, variables).selections(operation.selection_set, root,
                                                             False)


@dataclass(frozen=True)
class Lengths:
    """The longest strings an operation may give: IDs, and any other string."""

    max_id: int
    max_string: int

    def limit(self, input_type: Any) -> tuple[int, str] | None:
        """The longest string of this (input) type, and what it is called; None: no string."""
        name = getattr(get_named_type(input_type), "name", None)
        if name == "ID":
            return self.max_id, "an ID"
        if name == "String":
            return self.max_string, "a string"
        return None

    def refusal(self, what: str, actual: int, limit: tuple[int, str],
                node: Any = None) -> GraphQLError:
        return GraphQLError(
            f"{what} is {actual} characters long, over the limit of {limit[0]} for "
            f"{limit[1]}", nodes=node,
            extensions={"code": "BAD_USER_INPUT", "limit": limit[0], "actual": actual})

    def in_value(self, value: Any, input_type: Any, path: str) -> GraphQLError | None:
        """The first string over its limit in a variable's raw (JSON) value."""
        input_type = get_nullable_type(input_type)
        if is_list_type(input_type):
            items = value if isinstance(value, list) else [value]  # (one item coerces)
            for i, item in enumerate(items):
                found = self.in_value(item, input_type.of_type, f"{path}.{i}")
                if found is not None:
                    return found
        elif is_input_object_type(input_type):
            if isinstance(value, dict):
                for name, field in input_type.fields.items():
                    if name in value:
                        found = self.in_value(value[name], field.type, f"{path}.{name}")
                        if found is not None:
                            return found
        elif isinstance(value, str):
            limit = self.limit(input_type)
            if limit is not None and len(value) > limit[0]:
                return self.refusal(f"Variable `{path}`", len(value), limit)
        return None


def length_rule(lengths: Lengths) -> type[ValidationRule]:
    """A validation rule refusing string literals over their type's length: it runs once
    per document (Strawberry's validation cache keeps its verdict), with the input type
    graphql-core's validation already tracks."""

    class StringLengths(ValidationRule):
        def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
            limit = lengths.limit(self.context.get_input_type())
            if limit is not None and len(node.value) > limit[0]:
                self.report_error(lengths.refusal("A string in the document",
                                                  len(node.value), limit, node))

    return StringLengths


def oversized(schema: GraphQLSchema, operation: OperationDefinitionNode,
              variables: dict[str, Any], lengths: Lengths) -> GraphQLError | None:
    """The first string in the operation's variables longer than its type's limit (the
    document's own literals are `length_rule`'s); None when none is."""
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        if name not in variables:
            continue
        input_type = type_from_ast(schema, definition.type)
        if input_type is not None:
            problem = lengths.in_value(variables[name], input_type, f"${name}")
            if problem is not None:
                return problem
    return None


def check_limits(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None,
                 variables: dict[str, Any], limits: dict[str, int], lengths: Lengths
                 ) -> tuple[int | None, GraphQLError | None]:
    """The operation's cost (None when its variables do not coerce, or it is not found),
    and the error that refuses it: a variable's string over its length (BAD_USER_INPUT),
    over one of `limits` (depth, aliases, cost: QUERY_TOO_COMPLEX), or several operations
    and no name chosen (`operation_name` is the client's own, never a default). Every
    operation a client sends is checked here, whatever carries it: `QueryLimits` over HTTP,
    the subscriptions' own path (`app.execution.subscriptions`)."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    if len(operations) > 1 and operation_name is None:
        # Strawberry's operation_name falls back to the first operation's; the spec
        # (GetOperation) asks the client to choose when there are several.
        return None, GraphQLError(
            "Must provide operation name if query contains multiple operations.",
            extensions={"code": "BAD_REQUEST"})
    operation = next((o for o in operations if operation_name is None
                      or (o.name and o.name.value == operation_name)), None)
    if operation is None:
        return None, None
    too_long = oversized(schema, operation, variables, lengths) if variables else None
    if too_long is not None:
        return None, too_long
    figures = measure(schema, operation, fragments, variables)
    if figures is None:
        return None, None
    for name, limit in limits.items():
        actual = getattr(figures, name)
        if actual > limit:
            return figures.cost, GraphQLError(
                f"The operation's {name} is {actual}, over the limit of {limit}",
                extensions={"code": "QUERY_TOO_COMPLEX", "measure": name, "limit": limit,
                            "actual": actual})
    return figures.cost, None


class QueryLimits(SchemaExtension):
    """Refuses an operation over a limit with QUERY_TOO_COMPLEX and the figures, and one
    whose variables hold a string over its length limit with BAD_USER_INPUT."""

    def __init__(self, *, max_depth: int, max_aliases: int, max_cost: int,
                 lengths: Lengths | None = None) -> None:
        super().__init__()
        self.limits = {"depth": max_depth, "aliases": max_aliases, "cost": max_cost}
        self.lengths = lengths or Lengths(256, 10_000)

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        if document is not None and ec.result is None:
            # The operation name the client gave: Strawberry's falls back to the first.
            named = getattr(ec, "_provided_operation_name", ec.operation_name)
            cost, error = check_limits(ec.schema._schema, document, named,
                                       ec.variables or {}, self.limits, self.lengths)
            if cost is not None:
                context = ec.context
                if hasattr(context, "cost"):
                    context.cost = cost  # what the rate limit counts
            if error is not None:
                ec.result = ExecutionResult(data=None, errors=[error])
        yield
