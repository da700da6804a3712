"""Demand control by the IBM GraphQL Cost Directives specification, the way Apollo Router,
Hive Gateway, Grafbase and Cosmo compute it, from the `@cost` and `@listSize` directives of
the served SDL (`CostModel`, read from the printed schema: what client tooling reads too).

Estimated cost, before execution (`Estimator`), from the operation and its variables:
- the operation: a mutation 10, a query or a subscription 0;
- a field: its weight (its `@cost`, else its type's `@cost`, else 1 for an object, interface
  or union and 0 for a scalar or an enum) plus the cost of its selections, times its list
  size for a list; plus the weight of each argument given that has a `@cost`;
- a list's size: the largest value of its `@listSize` slicing arguments (an Int's value, a
  list's length such as `ids`; a default counts when the argument is not given or is null,
  as the resolvers use it), else its `assumedSize`, else DEFAULT_LIST_SIZE; a field named in
  its parent's `sizedFields` (a connection's `edges`) takes the parent's slicing size;
  with `requireOneSlicingArgument` (the default), exactly one slicing argument must have a
  value, else the operation is refused;
- fields under `@skip(if: true)` or `@include(if: false)` cost nothing; introspection
  (`__schema`, `__type`, `__typename`) costs nothing (the schema bounds it); a fragment
  costs what its selections cost where it is spread (each fragment is estimated once per
  place kind, so a fragment bomb costs its size to estimate).

Actual cost, after execution (`actual_cost`), by the same weights over what the response
holds: a list counts its items, a null counts nothing (nothing was read under it).

Both walks note whether they read a variable's value (`reads_variables`): when neither did,
the estimate and the actual cost's plan are the same for any variables, and the query
limits (app/execution/limits.py) keep them with the prepared operation. The values read are
those of @skip/@include (`included`) and of a sized field's arguments (`get_argument_values`
in `slicing_size`, which coerces them all); an argument's @cost (`argument_cost`) counts the
arguments given, by name, never their values, and input fields' @cost is not read. A new
read of `variables` must be noted the same way, or the limits would keep an estimate that
depends on them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    BooleanValueNode,
    DirectiveNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    build_schema,
    get_named_type,
    get_nullable_type,
    is_abstract_type,
    is_composite_type,
    is_list_type,
    is_non_null_type,
)
from graphql.execution.values import get_argument_values, get_directive_values
from graphql.type import GraphQLIncludeDirective, GraphQLSkipDirective

DEFAULT_LIST_SIZE = 10  # a list with no @listSize (none in this schema: each has one)
OPERATION_COST = {OperationType.MUTATION: 10, OperationType.QUERY: 0,
                  OperationType.SUBSCRIPTION: 0}
# Where the model is kept on the executable schema (graphql-core's `extensions`, for data of
# one's own), so that every path that checks an operation finds it.
SCHEMA_KEY = "cost_model"


class CostError(Exception):
    """The operation breaks a @listSize rule (requireOneSlicingArgument)."""


@dataclass(frozen=True)
class ListSize:
    assumed_size: int | None = None
    slicing_arguments: tuple[str, ...] = ()
    sized_fields: tuple[str, ...] = ()
    require_one_slicing_argument: bool = True


@dataclass
class CostModel:
    """The weights and list sizes of a schema, by type and by `Type.field` coordinate."""

    types: dict[str, int] = field(default_factory=dict)
    fields: dict[str, int] = field(default_factory=dict)
    arguments: dict[str, int] = field(default_factory=dict)  # `Type.field(arg:)`
    input_fields: dict[str, int] = field(default_factory=dict)  # `Input.field`
    list_sizes: dict[str, ListSize] = field(default_factory=dict)

    @classmethod
    def from_sdl(cls, sdl: str) -> CostModel:
        # Apollo Federation's `_entities` (not in the subgraph's printed SDL, by its
        # specification) returns one entity per representation, as routers size it.
        model = cls(list_sizes={"Query._entities": ListSize(
            slicing_arguments=("representations",))})
        schema = build_schema(sdl)
        for name, type_ in schema.type_map.items():
            if name.startswith("__"):
                continue
            weight = _weight(getattr(type_.ast_node, "directives", None))
            if weight is not None:
                model.types[name] = weight
            for fname, fdef in (getattr(type_, "fields", None) or {}).items():
                directives = getattr(fdef.ast_node, "directives", None)
                weight = _weight(directives)
                if weight is not None:
                    (model.fields if hasattr(fdef, "args") else model.input_fields)[
                        f"{name}.{fname}"] = weight
                size = _list_size(directives)
                if size is not None:
                    model.list_sizes[f"{name}.{fname}"] = size
                for aname, adef in (getattr(fdef, "args", None) or {}).items():
                    weight = _weight(getattr(adef.ast_node, "directives", None))
                    if weight is not None:
                        model.arguments[f"{name}.{fname}({aname}:)"] = weight
        return model

    def unit(self, parent: str, name: str, type_: Any) -> int:
        """What one instance of the field costs, its selections aside."""
        weight = self.fields.get(f"{parent}.{name}")
        if weight is not None:
            return weight
        named = get_named_type(type_)
        weight = self.types.get(named.name)
        if weight is not None:
            return weight
        return 1 if is_composite_type(named) else 0

    def argument_cost(self, parent: str, name: str, field_def: Any, node: FieldNode,
                      variables: Any) -> int:
        if not self.arguments or not node.arguments:
            return 0
        total = 0
        given = {a.name.value for a in node.arguments}
        for aname in field_def.args:
            if aname in given:
                total += self.arguments.get(f"{parent}.{name}({aname}:)", 0)
        return total


def _arguments(directive: DirectiveNode) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arg in directive.arguments or ():
        value = arg.value
        if isinstance(value, IntValueNode):
            out[arg.name.value] = int(value.value)
        elif isinstance(value, BooleanValueNode):
            out[arg.name.value] = value.value
        elif isinstance(value, ListValueNode):
            out[arg.name.value] = tuple(v.value for v in value.values
                                        if isinstance(v, StringValueNode))
        elif isinstance(value, StringValueNode):
            out[arg.name.value] = (value.value,)
    return out


def _weight(directives: Iterable[DirectiveNode] | None) -> int | None:
    for directive in directives or ():
        if directive.name.value == "cost":
            return int(_arguments(directive).get("weight", 0))
    return None


def _list_size(directives: Iterable[DirectiveNode] | None) -> ListSize | None:
    for directive in directives or ():
        if directive.name.value == "listSize":
            args = _arguments(directive)
            return ListSize(args.get("assumedSize"), tuple(args.get("slicingArguments", ())),
                            tuple(args.get("sizedFields", ())),
                            bool(args.get("requireOneSlicingArgument", True)))
    return None


def model_of(schema: GraphQLSchema) -> CostModel:
    """The cost model kept on the schema (`attach`); an empty one (defaults) if none is."""
    model = schema.extensions.get(SCHEMA_KEY) if schema.extensions else None
    return model if isinstance(model, CostModel) else CostModel()


def attach(schema: GraphQLSchema, sdl: str) -> CostModel:
    model = CostModel.from_sdl(sdl)
    schema.extensions = {**(schema.extensions or {}), SCHEMA_KEY: model}
    return model


def holds_variable(value: ValueNode) -> bool:
    """Whether an argument's value reads a variable (itself one, or one inside a list or an
    input object)."""
    if isinstance(value, VariableNode):
        return True
    if isinstance(value, ListValueNode):
        return any(holds_variable(item) for item in value.values)
    if isinstance(value, ObjectValueNode):
        return any(holds_variable(item.value) for item in value.fields)
    return False


def conditional_on_variable(node: Any) -> bool:
    """Whether `included` reads a variable for this selection (a @skip or @include whose
    `if` is one)."""
    return any(directive.name.value in ("skip", "include")
               and any(holds_variable(arg.value) for arg in directive.arguments or ())
               for directive in node.directives or ())


def sized_by_variable(rule: ListSize, field_def: Any, node: FieldNode) -> bool:
    """Whether `slicing_size` reads a variable for this field: a slicing argument given one;
    or another argument, as `get_argument_values` coerces them all and a variable's null
    where null is refused raises. (A nullable argument given a variable itself is passed
    through as it is: nothing is read from it that could change the size or raise, unless
    it is kept under a slicing argument's name, its `out_name`.)"""
    slicing = rule.slicing_arguments
    for argument in node.arguments or ():
        if not holds_variable(argument.value):
            continue
        name = argument.name.value
        arg_def = field_def.args.get(name)
        if name in slicing or arg_def is None \
                or not isinstance(argument.value, VariableNode) \
                or is_non_null_type(arg_def.type) \
                or getattr(arg_def, "out_name", None) in slicing:
            return True
    return False


def included(node: Any, variables: Any) -> bool:
    """Whether @skip / @include keep this selection."""
    if not node.directives:
        return True
    skip = get_directive_values(GraphQLSkipDirective, node, variables)
    if skip and skip.get("if") is True:
        return False
    include = get_directive_values(GraphQLIncludeDirective, node, variables)
    return not (include and include.get("if") is False)


class _Walk:
    """What the estimate and the plan share: the operation's context, and whether a walk
    read a variable's value (else what it worked out holds for any variables)."""

    def __init__(self, schema: GraphQLSchema, model: CostModel,
                 fragments: dict[str, FragmentDefinitionNode], variables: Any) -> None:
        self.schema = schema
        self.model = model
        self.fragments = fragments
        self.variables = variables
        self.reads_variables = False

    def kept(self, selection: Any) -> bool:
        """Whether @skip / @include keep `selection`, noting a variable they read."""
        if not selection.directives:
            return True
        if not self.reads_variables and conditional_on_variable(selection):
            self.reads_variables = True
        return included(selection, self.variables)


class Estimator(_Walk):
    """One walk of an operation for its estimated cost."""

    def __init__(self, schema: GraphQLSchema, model: CostModel,
                 fragments: dict[str, FragmentDefinitionNode], variables: Any
                 ) -> None:
        super().__init__(schema, model, fragments, variables)
        self._memo: dict[tuple[str, int | None, tuple[str, ...]], int] = {}
        self._open: set[str] = set()

    def operation(self, operation: OperationDefinitionNode) -> int:
        root = self.schema.get_root_type(operation.operation)
        return OPERATION_COST.get(operation.operation, 0) + self.selections(
            operation.selection_set, root, None, ())

    def selections(self, selection_set: SelectionSetNode | None, parent: Any,
                   sized: int | None, sized_fields: tuple[str, ...]) -> int:
        """The cost of a selection set on `parent`; `sized`/`sized_fields`: the parent
        field's slicing size and the fields of this type it sizes."""
        if selection_set is None or parent is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if not self.kept(selection):
                continue
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, sized, sized_fields)
            elif isinstance(selection, InlineFragmentNode):
                on = (self.schema.get_type(selection.type_condition.name.value)
                      if selection.type_condition else parent)
                total += self.selections(selection.selection_set, on, sized, sized_fields)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.spread(selection.name.value, sized, sized_fields)
        return total

    def spread(self, name: str, sized: int | None, sized_fields: tuple[str, ...]) -> int:
        fragment = self.fragments.get(name)
        if fragment is None or name in self._open:
            return 0  # validation reports unknown fragments and cycles
        key = (name, sized, sized_fields)
        found = self._memo.get(key)
        if found is None:
            self._open.add(name)
            on = self.schema.get_type(fragment.type_condition.name.value)
            found = self._memo[key] = self.selections(fragment.selection_set, on, sized,
                                                      sized_fields)
            self._open.discard(name)
        return found

    def field(self, node: FieldNode, parent: Any, sized: int | None,
              sized_fields: tuple[str, ...]) -> int:
        name = node.name.value
        if name.startswith("__"):
            return 0
        field_def = (getattr(parent, "fields", None) or {}).get(name)
        if field_def is None:
            return 0  # (validation refuses it)
        model = self.model
        coordinate = f"{parent.name}.{name}"
        size_rule = model.list_sizes.get(coordinate)
        slicing = self.slicing_size(size_rule, field_def, node, coordinate)
        child_sized = slicing if size_rule is not None and size_rule.sized_fields else None
        child_fields = size_rule.sized_fields if child_sized is not None and size_rule else ()
        children = self.selections(node.selection_set, get_named_type(field_def.type),
                                   child_sized, child_fields)
        cost = model.unit(parent.name, name, field_def.type) + children
        if is_list_type(get_nullable_type(field_def.type)):
            if name in sized_fields and sized is not None:
                count = sized
            elif size_rule is not None and not size_rule.sized_fields and slicing is not None:
                count = slicing
            elif size_rule is not None and size_rule.assumed_size is not None:
                count = size_rule.assumed_size
            else:
                count = DEFAULT_LIST_SIZE
            cost *= count
        return cost + model.argument_cost(parent.name, name, field_def, node, self.variables)

    def slicing_size(self, rule: ListSize | None, field_def: Any, node: FieldNode,
                     coordinate: str) -> int | None:
        """The largest value of the field's slicing arguments (defaults included); None
        when none has one."""
        if rule is None or not rule.slicing_arguments:
            return None
        if not self.reads_variables and sized_by_variable(rule, field_def, node):
            self.reads_variables = True
        args = get_argument_values(field_def, node, self.variables)
        sizes: list[int] = []
        for name in rule.slicing_arguments:
            value = args.get(name)
            if value is None and name in field_def.args:
                value = field_def.args[name].default_value  # an explicit null: the default
            if isinstance(value, bool):
                continue
            if isinstance(value, int):
                sizes.append(max(0, value))
            elif isinstance(value, list):
                sizes.append(len(value))
        if rule.require_one_slicing_argument and len(sizes) != 1:
            raise CostError(f"{coordinate} needs exactly one of its slicing arguments "
                            f"({', '.join(rule.slicing_arguments)}), got {len(sizes)}")
        if not sizes:
            return rule.assumed_size
        return max(sizes)


def estimate(schema: GraphQLSchema, operation: OperationDefinitionNode,
             fragments: dict[str, FragmentDefinitionNode], variables: Any,
             model: CostModel | None = None) -> int:
    """The operation's estimated cost (`variables` coerced). Raises CostError."""
    return Estimator(schema, model or model_of(schema), fragments, variables).operation(
        operation)


def actual_cost(schema: GraphQLSchema, operation: OperationDefinitionNode,
                fragments: dict[str, FragmentDefinitionNode], variables: Any,
                data: Any, model: CostModel | None = None) -> int:
    """The cost of what the response holds, by the same weights (lists at their length).
    The selections are compiled once into a plan (each response key's weight and the plan
    under it), then the data is walked with dictionary lookups only."""
    model = model or model_of(schema)
    root = schema.get_root_type(operation.operation)
    total = OPERATION_COST.get(operation.operation, 0)
    if isinstance(data, dict) and root is not None:
        plan = Planner(schema, model, fragments, variables).compile(
            [operation.selection_set], root)
        total += walk(plan, data)
    return total


# A response key's plan: its weight per instance, its arguments' weight, the plan of its
# selections (None for a scalar or an enum).
# (For a union or an interface: a plan per possible type, chosen by the item's __typename.)
Plan = list[tuple[str, int, int, "Plan | dict[str, Plan] | None"]]


class Planner(_Walk):
    """Compiles selections into a `Plan` for `walk`."""

    def compile(self, selection_sets: list[SelectionSetNode], parent: Any) -> Plan:
        schema, model = self.schema, self.model
        fields: dict[str, list[FieldNode]] = {}
        for selection_set in selection_sets:
            self.collect(selection_set, parent, fields, set())
        plan: Plan = []
        for key, nodes in fields.items():
            name = nodes[0].name.value
            field_def = (getattr(parent, "fields", None) or {}).get(name)
            if name.startswith("__") or field_def is None:
                continue
            named = get_named_type(field_def.type)
            sets = [n.selection_set for n in nodes if n.selection_set]
            children: Plan | dict[str, Plan] | None = None
            if is_abstract_type(named):
                children = {t.name: self.compile(sets, t)
                            for t in schema.get_possible_types(named)}
            elif is_composite_type(named):
                children = self.compile(sets, named)
            unit = model.unit(parent.name, name, field_def.type)
            arguments = model.argument_cost(parent.name, name, field_def, nodes[0],
                                            self.variables)
            if children is None and unit == 0 and arguments == 0:
                continue  # a scalar of weight 0: nothing to count (most of a response)
            plan.append((key, unit, arguments, children))
        return plan

    def collect(self, selection_set: SelectionSetNode | None, parent: Any,
                out: dict[str, list[FieldNode]], seen: set[str]) -> None:
        """The fields of a selection set on an object type, by response key: the fragments
        that apply to it merged in (those on it, or on a union or interface it belongs
        to)."""
        schema, fragments = self.schema, self.fragments
        for selection in (selection_set.selections if selection_set else ()):
            if not self.kept(selection):
                continue
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                out.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                if _applies(schema, selection.type_condition, parent):
                    self.collect(selection.selection_set, parent, out, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is not None and name not in seen \
                        and _applies(schema, fragment.type_condition, parent):
                    self.collect(fragment.selection_set, parent, out, seen | {name})


def _applies(schema: GraphQLSchema, condition: Any, parent: Any) -> bool:
    if condition is None:
        return True
    on = schema.get_type(condition.name.value)
    return on is parent or (is_abstract_type(on)
                            and schema.is_sub_type(on, parent))


def walk(plan: Plan, value: dict[str, Any]) -> int:
    """The actual cost of `value` (a response's data, or an object in it) by its plan."""
    total = 0
    for key, unit, arguments, children in plan:
        if key not in value:
            continue
        total += arguments
        item = value[key]
        if item is None:
            continue
        if type(item) is list:
            flat = item if not any(type(one) is list for one in item) else list(_items(item))
            if children is None:
                total += unit * sum(one is not None for one in flat)
                continue
            for one in flat:
                if one is not None:
                    total += unit
                    if type(one) is dict:
                        total += _walk_item(children, one)
        else:
            total += unit
            if children is not None and type(item) is dict:
                total += _walk_item(children, item)
    return total


def _walk_item(children: Plan | dict[str, Plan], item: dict[str, Any]) -> int:
    if type(children) is list:
        return walk(children, item)
    # A union's or an interface's item: the plan of its type (a router asks __typename).
    plans: dict[str, Plan] = children  # type: ignore[assignment]
    typename = item.get("__typename")
    plan = plans.get(typename) if isinstance(typename, str) else None
    if plan is None and len(plans) == 1:
        plan = next(iter(plans.values()))
    return walk(plan, item) if plan is not None else 0


def _items(value: Any) -> Iterable[Any]:
    """The non-null instances a response value holds (lists flattened)."""
    if value is None:
        return
    if isinstance(value, list):
        for item in value:
            yield from _items(item)
    else:
        yield value
