"""Query limits, checked once the document is parsed and valid and before any resolver runs:
the length of the strings it gives (its literals: `length_rule`, a validation rule; its
variables: `oversized`), then depth, aliases and cost (with the
request's variables), one pass over the operation. The token limit is Strawberry's
MaxTokensLimiter (it stops the parser itself).

Lengths: an ID longer than MAX_ID_LENGTH or any other string longer than MAX_STRING_LENGTH,
as a literal or in the variables, refuses the request with BAD_USER_INPUT before anything is
sent upstream (a 100 KB id would otherwise reach a service, whose 400 then reads as the
service's fault).

Cost: the IBM GraphQL Cost Directives specification's estimated cost, from the schema's
`@cost` and `@listSize` (`app.execution.cost`): objects 1, scalars 0, lists times their
`first` or number of `ids` (defaults included), a mutation 10 more. So
`topProducts(first: 10) { reviews(first: 5) { author { name } } }` costs
10 x (1 + 5 x (1 + 1)) = 110. The actual cost, by the same weights over the response, is
measured after execution (`app.execution.cost.actual_cost`). A federation router's
`_entities` is sized by its `representations` (schema/federation.py), its items weighed by
their `__typename`.

Worked out once per operation (`OperationFigures`, kept with the document in the operation
cache, app/execution/operations.py): which operation the name chooses, its fragments, its
depth and aliases (the document alone decides them), and its estimate and actual cost's plan
when their walk read no variable's value (app/execution/cost.py notes it: @skip/@include,
a sized field's arguments). Per request: the variables' lengths and coercion, the estimate
and the plan of an operation whose variables change them, the comparison with the limits,
and the walk of the response. The figures, the errors and the charge are the same as when
everything is worked out per request.
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
from graphql.execution.values import get_variable_values
from graphql.validation import ValidationRule
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult

from app.execution.cost import (
    OPERATION_COST,
    CostError,
    Estimator,
    Plan,
    Planner,
    estimate,
    model_of,
    walk,
)
from app.execution.operations import prepared_of

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
        """Depth (levels of fields) and aliases of a selection set."""
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
            return Measure(1, aliases)
        meta = meta or name.startswith("__")
        children = self.selections(node.selection_set, get_named_type(field_def.type), meta)
        return Measure(0 if meta else 1 + children.depth, aliases + children.aliases)


def measure(schema: GraphQLSchema, operation: OperationDefinitionNode,
            fragments: dict[str, FragmentDefinitionNode], inputs: dict[str, Any]
            ) -> Measure | None:
    """The operation's figures; None when its variables do not coerce (execution then
    reports them as the client's error). Raises CostError (a @listSize rule broken)."""
    variables = get_variable_values(schema, operation.variable_definitions or (), inputs)
    if isinstance(variables, list):
        return None
    root: GraphQLObjectType | None = schema.get_root_type(operation.operation)
    figures = Measurer(schema, fragments, variables).selections(operation.selection_set, root,
                                                                False)
    figures.cost = estimate(schema, operation, fragments, variables)
    return figures


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


class OperationFigures:
    """What an operation's limits depend on that its document (and the operation name the
    client gave) alone decides, worked out at most once when the document is a prepared
    one (`Prepared.limits`): the operation and its fragments, its depth and aliases, its
    estimated cost (or the @listSize rule it breaks) and its actual cost's plan, these two
    only when working them out read no variable's value (else they are worked out per
    request, from its variables)."""

    __slots__ = ("aliases", "cost", "cost_error", "depth", "fragments", "operation", "plan")

    def __init__(self, operation: OperationDefinitionNode,
                 fragments: dict[str, FragmentDefinitionNode]) -> None:
        self.operation = operation
        self.fragments = fragments
        self.depth: int | None = None
        self.aliases = 0
        self.cost: int | None = None
        self.cost_error: str | None = None
        self.plan: Plan | None = None

    def measure(self, schema: GraphQLSchema, variables: Any) -> Measure:
        """The operation's figures with these (coerced) variables. Raises CostError."""
        operation = self.operation
        if self.depth is None:
            # (Measurer reads no variable: depth and aliases count every field written.)
            root = schema.get_root_type(operation.operation)
            shape = Measurer(schema, self.fragments, variables).selections(
                operation.selection_set, root, False)
            self.depth, self.aliases = shape.depth, shape.aliases
        cost = self.cost
        if cost is None:
            if self.cost_error is not None:
                raise CostError(self.cost_error)
            estimator = Estimator(schema, model_of(schema), self.fragments, variables)
            try:
                cost = estimator.operation(operation)
            except CostError as error:
                if not estimator.reads_variables:
                    self.cost_error = str(error)
                raise
            if not estimator.reads_variables:
                self.cost = cost
        return Measure(self.depth, self.aliases, cost)

    def actual(self, schema: GraphQLSchema, variables: Any, data: Any) -> int:
        """The actual cost of the operation's response data (`actual_cost`)."""
        operation = self.operation
        total = OPERATION_COST.get(operation.operation, 0)
        root = schema.get_root_type(operation.operation)
        if isinstance(data, dict) and root is not None:
            plan = self.plan
            if plan is None:
                planner = Planner(schema, model_of(schema), self.fragments, variables)
                plan = planner.compile([operation.selection_set], root)
                if not planner.reads_variables:
                    self.plan = plan
            total += walk(plan, data)
        return total


def operation_figures(schema: GraphQLSchema, document: DocumentNode,
                      operation_name: str | None
                      ) -> OperationFigures | GraphQLError | None:
    """The figures of the operation `operation_name` chooses (the client's own: None
    chooses the only one), kept with the document when an operation cache holds it; the
    error when there are several operations and no name; None when none is chosen."""
    prepared = prepared_of(document)
    if prepared is not None and prepared.schema is schema:
        found: OperationFigures | None = prepared.limits.get(operation_name)
        if found is not None:
            return found
    else:
        prepared = None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) > 1 and operation_name is None:
        # Strawberry's operation_name falls back to the first operation's; the spec
        # (GetOperation) asks the client to choose when there are several.
        return GraphQLError(
            "Must provide operation name if query contains multiple operations.",
            extensions={"code": "BAD_REQUEST"})
    operation = next((o for o in operations if operation_name is None
                      or (o.name and o.name.value == operation_name)), None)
    if operation is None:
        return None  # (not kept: the names a client may send are not bounded)
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    figures = OperationFigures(operation, fragments)
    if prepared is not None:
        prepared.limits[operation_name] = figures
    return figures


@dataclass
class Checked:
    """What `check` found: the estimated cost (None: not measured), the error refusing the
    operation, and for its actual cost, its figures and coerced variables."""

    cost: int | None = None
    error: GraphQLError | None = None
    figures: OperationFigures | None = None
    variables: Any = None


def check(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None,
          variables: dict[str, Any], limits: dict[str, int], lengths: Lengths) -> Checked:
    """`check_limits`, with what measuring the actual cost needs."""
    figures = operation_figures(schema, document, operation_name)
    if figures is None:
        return Checked()
    if isinstance(figures, GraphQLError):
        return Checked(error=figures)
    operation = figures.operation
    too_long = oversized(schema, operation, variables, lengths) if variables else None
    if too_long is not None:
        return Checked(error=too_long)
    coerced = get_variable_values(schema, operation.variable_definitions or (), variables)
    if isinstance(coerced, list):
        return Checked()  # (execution reports them as the client's error)
    try:
        measured = figures.measure(schema, coerced)
    except CostError as error:
        return Checked(error=GraphQLError(str(error), extensions={"code": "BAD_USER_INPUT"}))
    for name, limit in limits.items():
        actual = getattr(measured, name)
        if actual > limit:
            return Checked(measured.cost, GraphQLError(
                f"The operation's {name} is {actual}, over the limit of {limit}",
                extensions={"code": "QUERY_TOO_COMPLEX", "measure": name, "limit": limit,
                            "actual": actual}))
    return Checked(measured.cost, None, figures, coerced)


def check_limits(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None,
                 variables: dict[str, Any], limits: dict[str, int], lengths: Lengths
                 ) -> tuple[int | None, GraphQLError | None]:
    """The operation's cost (None when its variables do not coerce, or it is not found),
    and the error that refuses it: a variable's string over its length (BAD_USER_INPUT),
    over one of `limits` (depth, aliases, cost: QUERY_TOO_COMPLEX), or several operations
    and no name chosen (`operation_name` is the client's own, never a default). Every
    operation a client sends is checked here, whatever carries it: `QueryLimits` over HTTP,
    the subscriptions' own path (`app.execution.subscriptions`)."""
    checked = check(schema, document, operation_name, variables, limits, lengths)
    return checked.cost, checked.error


class QueryLimits(SchemaExtension):
    """Refuses an operation over a limit with QUERY_TOO_COMPLEX and the figures, and one
    whose variables hold a string over its length limit with BAD_USER_INPUT; once it ran,
    measures its actual cost (`RequestContext.cost_actual`) for the rate limit's refund,
    `extensions.cost` and the metrics."""

    def __init__(self, *, max_depth: int, max_aliases: int, max_cost: int,
                 lengths: Lengths | None = None) -> None:
        super().__init__()
        self.limits = {"depth": max_depth, "aliases": max_aliases, "cost": max_cost}
        self.lengths = lengths or Lengths(256, 10_000)

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        checked: Checked | None = None
        if document is not None and ec.result is None:
            # The operation name the client gave: Strawberry's falls back to the first.
            named = getattr(ec, "_provided_operation_name", ec.operation_name)
            checked = check(ec.schema._schema, document, named, ec.variables or {},
                            self.limits, self.lengths)
            if checked.cost is not None:
                context = ec.context
                if hasattr(context, "cost"):
                    context.cost = checked.cost  # what the rate limit charges
                    context.cost_measured = True
            if checked.error is not None:
                ec.result = ExecutionResult(data=None, errors=[checked.error])
        yield
        result = ec.result
        if checked is None or checked.figures is None or not hasattr(result, "data"):
            # (Nothing ran, or an incremental answer whose parts come later: it stays
            # charged its estimate, with no refund.)
            return
        actual = checked.figures.actual(ec.schema._schema, checked.variables,
                                        getattr(result, "data", None))
        context = ec.context
        if hasattr(context, "cost_actual"):
            context.cost_actual = actual
