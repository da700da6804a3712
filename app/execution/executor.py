"""A dataflow executor for the gateway's queries: graphql-core's `Executor`, except that a
query whose fields all resolve directly (see `schema/direct_resolvers.py`) runs as a plan.

graphql-core spends most of a deep query's CPU on per-field machinery: a resolve-info object,
argument parsing, a coroutine and awaitable checks per field, a `gather` per list. Here the
fields of every object that is ready are resolved in one synchronous pass (key reads inline,
arguments parsed once per field node, resolvers called with one shared info object); the
lookups they issue leave together, one batch per loader, and each awaited value is completed
as soon as it arrives, its objects' fields resolved at once. There is no level barrier: a
branch of the query goes on as soon as its own lookups answer, whatever a slow service
elsewhere in the query is doing; values that arrive in the same loop turn (all of one batch)
are completed together, so their lookups still batch. The loaders may answer a lookup whose
value is at hand with the value itself (`loaders.registry.Loaders.get`): nothing under it
runs before its siblings' lookups have been issued.

Semantics are graphql-core's: the same field collection (fragments, @skip/@include), leaf
serialization, errors located at their paths, and nulls propagating to the nearest nullable
parent. Subscriptions, abstract types and fields that need Strawberry's own resolver path
(input objects, asynchronous permission classes) use graphql-core's executor unchanged; so
does a query in which any of them appears. Private fields are planned: their permission
classes are checked by their direct resolvers (`schema/direct_resolvers.py`). A mutation's
root fields run as graphql-core runs them, one after the other in document order, each
through its own resolver path (Strawberry's: input objects, permissions); the payload of
each is then completed by the plan, as a query's objects are, when its selection plans.

Plans are kept per operation: what the plan works out from the operation alone (whether it
plans, each selection's grouped subfields and each field's entry) is kept with the operation's
prepared document (app/execution/operations.py) and reused by every request of that
operation, unless a directive in it reads a variable (its @skip/@include decide which fields
are collected: those are planned per request).

@defer and @stream: both executors here apply them as if absent (graphql-core's base
executor does), which is the whole answer a client gets when it does not accept incremental
delivery. When it does (`RequestContext.incremental`, set by the HTTP view from Accept) and
the operation uses either, `GatewayExecutor.build` hands the operation to
`IncrementalGatewayExecutor`: graphql-core's incremental executor with this module's partial
results, over the same context, loaders and resolver middleware.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from math import isfinite
from typing import Any, Literal

from graphql import (
    ExecutionResult,
    GraphQLBoolean,
    GraphQLError,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLString,
    is_leaf_type,
    located_error,
)
from graphql.execution.collect_fields import FieldDetailsList
from graphql.execution.executor import Executor
from graphql.execution.incremental.incremental_executor import IncrementalExecutor
from graphql.execution.values import get_argument_values
from graphql.language import DirectiveNode, DocumentNode, OperationDefinitionNode, Visitor, visit
from graphql.language.visitor import BREAK
from graphql.pyutils import Path

from app.core.errors import Forbidden
from app.core.observer import NULL_OBSERVER
from app.execution.cost import holds_variable
from app.execution.operations import Prepared, prepared_of
from app.upstream.failures import UpstreamError
from loaders.then import Then

DIRECT = "_gateway_direct"  # attribute set on resolvers that need only `info.context`
KEY = "_gateway_key"  # attribute of key-reading resolvers: the source key they read
FALLBACK = "gateway_fallback"  # key of a field's extensions: its value when its upstream failed
# Built-in scalars whose serializer returns a value of exactly this Python type unchanged
# (Int: within 32 bits; Float: finite): such a value is written as it is, with no call.
VERBATIM: dict[Any, type] = {GraphQLString: str, GraphQLID: str, GraphQLBoolean: bool,
                             GraphQLInt: int, GraphQLFloat: float}
# What resolvers return at hand: never awaitable, and told apart with one set lookup.
_SYNC = frozenset({dict, list, str, bool, int, float, type(None)})
MAX_INT = 2**31 - 1
MIN_INT = -(2**31)


def _verbatim(kind: type[Any] | None, value: Any) -> bool:
    """Whether `value` is its scalar's serialized form already (see VERBATIM)."""
    if kind is None or type(value) is not kind:
        return False
    if kind is int:
        return MIN_INT <= value <= MAX_INT
    return kind is not float or isfinite(value)


class _Info:
    """What direct resolvers read of resolve info: the request's context."""

    __slots__ = ("context",)

    def __init__(self, context: Any) -> None:
        self.context = context


class _FieldInfo:
    """The resolve info a field gets when resolver middleware (tracing) wraps it: the
    context, the field's coordinate and its path (`keys`, the tuple this executor keeps)."""

    __slots__ = ("context", "field_name", "keys", "parent_type")

    def __init__(self, context: Any, parent_type: GraphQLObjectType, field_name: str,
                 keys: tuple[Any, ...]) -> None:
        self.context = context
        self.parent_type = parent_type
        self.field_name = field_name
        self.keys = keys

    @property
    def path(self) -> Path | None:
        return _graphql_path(self.keys)


# Where a completed value sits: (container, key, nullable, parent slot). Nulling it, or its
# nearest nullable ancestor, is how a non-null violation propagates. A tuple, not an object:
# one is made per object in the result (about 1,500 in the deep query), and a class's
# __init__ call costs several times a tuple's creation.
_Slot = tuple[Any, Any, bool, Any]
# A value to complete: its field's type and details, the value, where it goes (container,
# key, slot), its path, and the field's parent type and name (the arguments of _complete).
_Entry = tuple[GraphQLOutputType, FieldDetailsList, Any, Any, Any, _Slot, tuple[Any, ...],
               GraphQLObjectType, str]


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


_NO_FALLBACK = object()


INCREMENTAL_DIRECTIVES = frozenset({"defer", "stream"})
EARLY_EXECUTION = 6  # `enable_early_execution`'s position in Executor.build after the context


class _FindsIncremental(Visitor):
    found = False

    def enter_directive(self, node: DirectiveNode, *_: Any) -> Any:
        if node.name.value in INCREMENTAL_DIRECTIVES:
            self.found = True
            return BREAK
        return None


def uses_incremental(document: DocumentNode) -> bool:
    """Whether a document has a @defer or @stream anywhere (its `if` is decided later)."""
    finder = _FindsIncremental()
    visit(document, finder)
    return finder.found


class _FindsVariableDirective(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found = False

    def enter_directive(self, node: DirectiveNode, *_: Any) -> Any:
        if any(holds_variable(argument.value) for argument in node.arguments or ()):
            self.found = True
            return BREAK
        return None


def collects_per_request(operation: OperationDefinitionNode, fragments: Any) -> bool:
    """Whether a directive in the operation (or a fragment it may use) reads a variable: its
    field collection (@skip/@include) then depends on the request's variables."""
    finder = _FindsVariableDirective()
    for node in (operation, *(details.definition for details in fragments.values())):
        visit(node, finder)
        if finder.found:
            return True
    return False


class OperationPlan:
    """What the plan executor works out from an operation alone, for every request of it:
    its root grouped field set (whose field lists' identities key the rest), whether it
    plans, each selection's grouped subfields and template, and each selection's plan."""

    __slots__ = ("grouped", "plannable", "plans", "subfields")

    def __init__(self, grouped: Any, plannable: bool) -> None:
        self.grouped = grouped
        self.plannable = plannable
        self.subfields: dict[int, Any] = {}
        self.plans: dict[int, list[tuple[Any, ...]]] = {}


# Kept in a prepared document's `plans` for an operation planned per request.
_PER_REQUEST: Literal[False] = False


class _Cohort:
    """A field's values across the objects of one round (a list's items): how many are
    still awaited, and those that are here, which complete together when none is."""

    __slots__ = ("held", "waiting")

    def __init__(self) -> None:
        self.waiting = 0
        self.held: list[_Entry] = []


class GatewayExecutor(Executor[Any]):
    """graphql-core's executor, with partial results: a field whose upstream failed takes
    its fallback (`schema.partial`) instead of nulling its parents."""

    def __init__(self, *args: Any, operation_extensions: Any = None, **kwargs: Any) -> None:
        # Strawberry hands its executor class the request's `extensions`; unused here.
        super().__init__(*args, **kwargs)

    @classmethod
    def build(cls, schema: Any, document: DocumentNode, root_value: Any = None,
              context_value: Any = None, *args: Any, **kwargs: Any) -> Any:
        """The executor for one operation: this class, or the incremental one when the
        client accepts incremental delivery and the operation defers or streams."""
        if (cls is not IncrementalGatewayExecutor
                and getattr(context_value, "incremental", False)
                and uses_incremental(document)):
            # Deferred work starts with the rest, not once the first part is out: a slow
            # deferred service then costs the whole answer its own latency, not the sum.
            # (graphql-core passes build's arguments by position; this is the seventh.)
            if len(args) > EARLY_EXECUTION:
                args = (*args[:EARLY_EXECUTION], True, *args[EARLY_EXECUTION + 1:])
            else:
                kwargs["enable_early_execution"] = True
            return IncrementalGatewayExecutor.build(schema, document, root_value,
                                                    context_value, *args, **kwargs)
        return super().build(schema, document, root_value, context_value, *args, **kwargs)

    def build_response(self, data: dict[str, Any] | None) -> Any:
        response = super().build_response(data)
        if isinstance(response, ExecutionResult):
            # graphql-core keeps bound methods of the executor on it (`async_helpers`): a
            # cycle through which the request's whole result, its context and its loaders
            # lived until the cycle collector's next pass (bench/README.md, garbage).
            self.async_helpers = None  # type: ignore[assignment]  # typed never None; unused now
        return response

    def fallback(self, error: BaseException, field_def: GraphQLField,
                 details: FieldDetailsList, path: Path | None) -> Any:
        """The field's fallback value when `error` is an upstream failure and the field has
        one, with the error recorded at the field's path; else `_NO_FALLBACK`."""
        extensions = field_def.extensions
        if not extensions or not isinstance(error, UpstreamError | Forbidden):
            return _NO_FALLBACK
        make = extensions.get(FALLBACK)
        if make is None:
            return _NO_FALLBACK
        node = details[0].node
        args = (get_argument_values(field_def, node, self.variable_values)
                if field_def.args or node.arguments else {})
        self.collected_errors.add(
            located_error(error, [d.node for d in details], path.as_list() if path else None),
            path)
        return make(args)

    async def complete_awaitable_value(
        self, return_type: GraphQLOutputType, field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any], path: Path, result: Any, position_context: Any,
    ) -> Any:
        field_def = info.parent_type.fields[info.field_name]
        if field_def.extensions and FALLBACK in field_def.extensions:
            settled = asyncio.get_running_loop().create_future()
            try:
                settled.set_result(await result)
            except Exception as error:
                value = self.fallback(error, field_def, field_details_list, path)
                if value is _NO_FALLBACK:
                    settled.set_exception(error)  # graphql-core's own handling, as before
                else:
                    settled.set_result(value)
            result = settled
        return await super().complete_awaitable_value(
            return_type, field_details_list, info, path, result, position_context)


class IncrementalGatewayExecutor(GatewayExecutor, IncrementalExecutor):
    """graphql-core's incremental executor (@defer, @stream) with the partial results of
    `GatewayExecutor`; its parts are formatted and sent by app/http/incremental.py."""


class PlanExecutor(GatewayExecutor):

    _prepared: Prepared | None = None  # the operation cache's entry of the document, if any

    @classmethod
    def build(cls, schema: Any, document: DocumentNode, *args: Any, **kwargs: Any) -> Any:
        executor = super().build(schema, document, *args, **kwargs)
        if isinstance(executor, PlanExecutor):
            executor._prepared = prepared_of(document)
        return executor

    def _kept_plan(self) -> OperationPlan | Literal[False] | None:
        """This operation's kept plan; None when none is kept yet; `_PER_REQUEST` when it is
        planned per request (a document from no operation cache, or collected by variables)."""
        prepared = self._prepared
        if prepared is None or prepared.schema is not self.schema:
            return _PER_REQUEST
        # (Keyed by the operation node's identity: the prepared document holds it.)
        kept = prepared.plans.get(id(self.operation))
        if kept is None and collects_per_request(self.operation, self.fragments):
            kept = prepared.plans[id(self.operation)] = _PER_REQUEST
        return kept

    def execute_root_grouped_field_set(
        self, root_type: GraphQLObjectType, root_value: Any, grouped_field_set: Any,
        serially: bool, position_context: Any,
    ) -> Any:
        gate = getattr(self.context_value, "batch_gate", None)
        if gate is not None:
            # An operation of a batch that runs with others: they start together, so that
            # their lookups go out together (app/http/batching.py, Gate).
            return self._when_open(gate, root_type, root_value, grouped_field_set, serially,
                                   position_context)
        return self._execute_root(root_type, root_value, grouped_field_set, serially,
                                  position_context)

    async def _when_open(self, gate: Callable[[], Awaitable[None]], *args: Any) -> Any:
        await gate()
        result = self._execute_root(*args)
        return await result if self.is_awaitable(result) else result

    _payloads = False  # a mutation: its root fields' payloads are planned (see below)
    _counted = False  # the operation was counted as planned
    _escaped: GraphQLError | None = None  # a payload's null propagated past it
    _subfields: dict[int, Any]  # per field's details: its object type's grouped subfields
    _nulled: set[tuple[Any, ...]]  # paths nulled by a non-null violation

    def _execute_root(
        self, root_type: GraphQLObjectType, root_value: Any, grouped_field_set: Any,
        serially: bool, position_context: Any,
    ) -> Any:
        if serially:
            # A mutation: graphql-core runs its root fields one after the other, each through
            # its own resolver path (Strawberry's: input objects, permissions, resolver
            # middleware), and each one's payload is completed by the plan
            # (`execute_collected_subfields`), once its write is done.
            self._payloads = True
            self._subfields = {}
            self._nulled = set()
            return super().execute_root_grouped_field_set(
                root_type, root_value, grouped_field_set, serially, position_context)
        kept = self._kept_plan()
        if isinstance(kept, OperationPlan):
            plan = kept
        else:
            plan = OperationPlan(grouped_field_set,
                                 self._plannable(root_type, grouped_field_set, set()))
            if kept is None:  # the first request of this operation: kept for the next
                assert self._prepared is not None
                self._prepared.plans[id(self.operation)] = plan
        if not plan.plannable:
            return super().execute_root_grouped_field_set(
                root_type, root_value, grouped_field_set, serially, position_context)
        getattr(self.context_value, "observer", NULL_OBSERVER).operation_planned()
        self._subfields = plan.subfields
        self._nulled = set()
        grouped = plan.grouped
        data: dict[str, Any] = dict.fromkeys(grouped)
        return self._run(root_type, root_value, grouped, data,
                         ({"data": data}, "data", True, None), (), plan.plans)

    def execute_collected_subfields(
        self, parent_type: GraphQLObjectType, source_value: Any, path: Path,
        grouped_field_set: Any, new_defer_usages: Any, position_context: Any,
    ) -> Any:
        if (self._payloads and path.prev is None
                and self._plannable(parent_type, grouped_field_set, set())):
            return self._payload(parent_type, source_value, path.key, grouped_field_set)
        return super().execute_collected_subfields(
            parent_type, source_value, path, grouped_field_set, new_defer_usages,
            position_context)

    async def _payload(self, payload_type: GraphQLObjectType, payload: Any, key: Any,
                       grouped: Any) -> dict[str, Any]:
        """A mutation field's payload (its write is done), completed as a query's objects
        are. A non-null violation that reaches the payload itself is raised, for
        graphql-core to handle at the mutation field as it would its own (the gateway's
        mutation fields are non-null: the data is null, and the fields after it do not run)."""
        if not self._counted:  # once per operation, at its first planned payload
            self._counted = True
            getattr(self.context_value, "observer", NULL_OBSERVER).operation_planned()
        loaders = getattr(self.context_value, "loaders", None)
        by_level = loaders.by_level if loaders is not None else False
        data: dict[str, Any] = dict.fromkeys(grouped)
        try:
            await self._run(payload_type, payload, grouped, data, ({key: data}, key, False, None),
                            (key,))
        finally:
            if loaders is not None:
                # graphql-core's executor runs the next mutation (and any payload the plan
                # does not take): no value at hand there (see Loaders._ready).
                loaders.by_level = by_level
        escaped, self._escaped = self._escaped, None
        if escaped is not None:
            raise escaped
        return data

    # -- planning ----------------------------------------------------------------------------
    def _plannable(self, parent: GraphQLObjectType, fields: Any, seen: set[int]) -> bool:
        for details in fields.values():
            node = details[0].node
            name = node.name.value
            if name == "__typename":
                continue
            field_def = parent.fields.get(name)
            if field_def is None or not getattr(field_def.resolve, DIRECT, False):
                return False
            named = field_def.type
            while isinstance(named, GraphQLNonNull | GraphQLList):
                named = named.of_type
            if is_leaf_type(named):
                continue
            if not isinstance(named, GraphQLObjectType):
                return False  # an interface or union: graphql-core resolves its type
            if id(details) in seen:
                continue
            seen.add(id(details))
            collected = self.collect_subfields(named, details)
            # (A deferred field is planned with the rest: this executor answers whole, as
            # graphql-core's base executor does; incremental delivery has its own class.)
            if not self._plannable(named, collected.grouped_field_set, seen):
                return False
        return True

    # -- execution ---------------------------------------------------------------------------
    async def _run(self, root_type: GraphQLObjectType, root_value: Any, grouped: Any,
                   data: dict[str, Any], root: _Slot, root_path: tuple[Any, ...],
                   plans: dict[int, list[tuple[Any, ...]]] | None = None) -> Any:
        """Complete `root_value`'s selection `grouped` into `data` (at `root`, the slot of the
        query's data or of a mutation's payload, whose path is `root_path`), with `plans`,
        each selection's plan by its grouped field set (the operation's kept ones, or
        this run's)."""
        # Every object's dict starts with its response keys in selection order (all None),
        # so that values written as they come (key reads at once, resolver results later)
        # keep the order the spec gives them. Each key is always written after.
        info = _Info(self.context_value)
        # Every object's lookups are issued in one synchronous pass with those of the other
        # objects that became ready with it, so values at hand cannot run ahead of their
        # siblings: the request's loaders may answer them without a batch.
        loaders = getattr(self.context_value, "loaders", None)
        if loaders is not None:
            loaders.by_level = True
        # Resolver middleware (the telemetry extension) wraps resolvers, never key reads,
        # and only in requests it has work in (a recorded trace, sampled metrics).
        middleware = self.middleware_manager
        wrap = (middleware.get_field_resolver
                if middleware and middleware.middlewares
                and getattr(self.context_value, "resolver_hooks", True) else None)
        arguments: dict[int, tuple[GraphQLField, dict[str, Any]]] = {}
        if plans is None:
            plans = {}
        is_awaitable = self.is_awaitable
        complete = self._complete
        # No level barrier: an awaited value is completed as soon as its cohort is whole
        # (below), and the objects it makes have their fields resolved at once, so a branch
        # never waits for a slow lookup elsewhere in the query. What arrives in the same loop
        # turn (a batch's futures are all set in one step) is completed together, and the
        # lookups it issues leave together, one batch per loader.
        arrived: list[tuple[_Cohort, tuple[Any, ...], Any, asyncio.Future[Any]]] = []
        wake: list[asyncio.Future[None] | None] = [None]
        started: list[asyncio.Future[Any]] = []  # tasks of this run's coroutines
        outstanding = 0

        def arrive(cohort: _Cohort, call: tuple[Any, ...], fn: Any,
                   future: asyncio.Future[Any]) -> None:
            arrived.append((cohort, call, fn, future))
            waiter = wake[0]
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        Work = tuple[GraphQLObjectType, Any, Any, dict[str, Any], _Slot, tuple[Any, ...]]
        work: list[Work] = [(root_type, grouped, root_value, data, root, root_path)]
        loop = asyncio.get_running_loop()
        try:
            while True:
                while work:
                    # One round: resolve the fields of every object that is ready, issuing
                    # their lookups, then complete what was at hand, which readies the next
                    # objects. A field's values across the round's objects (a list's items)
                    # are a cohort: they complete together once all have arrived, so that a
                    # value at hand (or an early batch of a split list) does not send the
                    # lookups under it ahead of its siblings', in a batch of their own.
                    cohorts: dict[int, _Cohort] = {}
                    at_hand: list[_Entry] = []
                    for parent_type, fields, source, target, slot, path in work:
                        # What each field of this selection needs, worked out once for
                        # all the objects that share the selection (and kept with the
                        # operation's plan for its next requests).
                        plan = plans.get(id(fields))
                        if plan is None:
                            plan = plans[id(fields)] = _plan(parent_type, fields)
                        for key, details, node, name, field_def, source_key, verbatim, \
                                nullable in plan:
                            if field_def is None:
                                target[key] = parent_type.name  # __typename
                                continue
                            try:
                                if source_key is not None:
                                    value = source[source_key]
                                    # A key read of a well-typed scalar: the answer, written
                                    # now (no completion step, no path built). Strings and
                                    # booleans, most of them, need no further check.
                                    kind = type(value)
                                    if kind is verbatim:
                                        if kind is str or kind is bool \
                                                or _verbatim(verbatim, value):
                                            target[key] = value
                                            continue
                                    elif value is None and nullable:
                                        target[key] = None
                                        continue
                                else:
                                    # By node, for its definition: one node of a fragment
                                    # on an interface is two types' fields, whose
                                    # arguments' defaults may differ.
                                    read = arguments.get(id(node))
                                    if read is not None and read[0] is field_def:
                                        args = read[1]
                                    else:
                                        args = (get_argument_values(field_def, node,
                                                                    self.variable_values)
                                                if field_def.args or node.arguments else {})
                                        arguments[id(node)] = (field_def, args)
                                    resolve = field_def.resolve
                                    if wrap is None:
                                        value = resolve(source, info, **args) if args \
                                            else resolve(source, info)
                                    else:
                                        value = wrap(resolve)(
                                            source, _FieldInfo(info.context, parent_type,
                                                               name, (*path, key)), **args)
                                    if type(value) not in _SYNC and is_awaitable(value):
                                        fn = None
                                        if isinstance(value, Then):
                                            future, fn = value.future, value.fn
                                        elif asyncio.isfuture(value):
                                            future = value
                                        else:  # a coroutine: it runs to issue its lookups
                                            future = asyncio.ensure_future(value)
                                            started.append(future)
                                        cohort = cohorts.get(id(details))
                                        if cohort is None:
                                            cohort = cohorts[id(details)] = _Cohort()
                                        cohort.waiting += 1
                                        future.add_done_callback(partial(
                                            arrive, cohort,
                                            (field_def.type, details, target, key, slot,
                                             (*path, key), parent_type, name), fn))
                                        outstanding += 1
                                        continue
                            except Exception as error:
                                value = _Failed(error)
                            at_hand.append((field_def.type, details, value, target, key,
                                            slot, (*path, key), parent_type, name))
                    # After the round's lookups are issued: what was at hand completes
                    # before anything awaited, so that a null it propagates is in place
                    # before the awaited values under it complete (as in graphql-core).
                    work = []
                    for entry in at_hand:
                        cohort = cohorts.get(id(entry[1]))
                        if cohort is not None:
                            cohort.held.append(entry)  # completes with its siblings
                        else:
                            complete(*entry, work)
                if not outstanding:
                    break
                if not arrived:
                    waiter = wake[0] = loop.create_future()
                    await waiter
                    wake[0] = None
                ready = arrived[:]
                arrived.clear()
                outstanding -= len(ready)
                for cohort, call, fn, future in ready:
                    failed = future.exception()  # raises CancelledError if it was cancelled
                    if failed is not None:
                        if not isinstance(failed, Exception):
                            raise failed
                        value = _Failed(failed)
                    else:
                        value = future.result()
                        if fn is not None:
                            try:
                                value = fn(value)
                            except Exception as failure:
                                value = _Failed(failure)
                    return_type, details, target_, key, slot_, path_, parent, name = call
                    cohort.held.append((return_type, details, value, target_, key, slot_,
                                        path_, parent, name))
                    cohort.waiting -= 1
                    if not cohort.waiting:
                        held, cohort.held = cohort.held, []
                        for entry in held:
                            if self._nulled and self._under_nulled(entry[6]):
                                continue  # its object is null already: graphql-core cancels
                            complete(*entry, work)
        finally:
            for task in started:
                if not task.done():
                    task.cancel()  # the request ended (its deadline): nothing may outlive it
        return root[0][root[1]]

    def _complete(self, return_type: GraphQLOutputType, details: FieldDetailsList, value: Any,
                  container: Any, key: Any, parent: _Slot, path: tuple[Any, ...],
                  parent_type: GraphQLObjectType, name: str, work: list[Any]) -> None:
        # The field's coordinate (parent type, name) is formatted only for an error message.
        nullable = not isinstance(return_type, GraphQLNonNull)
        inner = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
        if isinstance(value, _Failed):
            if self._nulled and self._under_nulled(path):
                return  # its object is null already: graphql-core cancels what is under it
            fallback = self.fallback(value.error, parent_type.fields[name], details,
                                     _graphql_path(path))
            if fallback is _NO_FALLBACK:
                self._fail(value.error, details, path, (container, key, nullable, parent))
                return
            value = fallback
        if value is None:
            if nullable:
                container[key] = None
            else:
                self._fail(GraphQLError(
                    f"Cannot return null for non-nullable field {parent_type.name}.{name}."),
                    details, path, (container, key, False, parent))
            return
        if isinstance(inner, GraphQLList):
            if type(value) is not list and (isinstance(value, str)
                                            or not isinstance(value, Sequence)):
                self._fail(GraphQLError(
                    "Expected Iterable, but did not find one for field "
                    f"'{parent_type.name}.{name}'."),
                    details, path, (container, key, nullable, parent))
                return
            items: list[Any] = [None] * len(value)
            container[key] = items
            slot = (container, key, nullable, parent)
            for index, item in enumerate(value):
                self._complete(inner.of_type, details, item, items, index, slot,
                               (*path, index), parent_type, name, work)
            return
        if isinstance(inner, GraphQLObjectType):
            # An object type's subfields depend only on the field nodes: one lookup by their
            # list's identity (kept alive by the selection that holds it) per object. Its
            # dict is a copy of a template with the response keys in selection order.
            subfields = self._subfields.get(id(details))
            if subfields is None:
                grouped = self.collect_subfields(inner, details).grouped_field_set
                subfields = self._subfields[id(details)] = (grouped, dict.fromkeys(grouped))
            grouped, template = subfields
            result: dict[str, Any] = template.copy()
            container[key] = result
            work.append((inner, grouped, value, result,
                               (container, key, nullable, parent), path))
            return
        if _verbatim(VERBATIM.get(inner), value):
            container[key] = value
            return
        try:
            # A leaf: `_plannable` admits no interface or union, the other types without it.
            serialized = inner.serialize(value)  # type: ignore[union-attr]  # a leaf type
            if serialized is None:
                raise GraphQLError(f"Expected `{inner}.serialize({value!r})` to return "
                                   "non-nullable value, returned: None")
        except Exception as error:
            self._fail(error, details, path, (container, key, nullable, parent))
            return
        container[key] = serialized

    def _fail(self, error: Exception, details: FieldDetailsList, path: tuple[Any, ...],
              slot: _Slot) -> None:
        if self._nulled and self._under_nulled(path):
            return
        located = located_error(error, [d.node for d in details], list(path))
        current: _Slot | None = slot
        depth = len(path)
        while current is not None:
            container, key, nullable, parent = current
            if nullable:
                self.collected_errors.add(located, _graphql_path(path))
                container[key] = None
                # graphql-core cancels what is still running under a nulled position, so
                # errors that arise under it later are not reported: the same here.
                self._nulled.add(path[:depth])
                return
            current = parent
            depth -= 1
        # Past a mutation's (non-null) payload: `_payload` raises it to graphql-core, which
        # records it where the null lands (the data). Nothing under the payload goes on.
        self._escaped = located
        self._nulled.add(path[:depth + 1])

    def _under_nulled(self, path: tuple[Any, ...]) -> bool:
        nulled = self._nulled
        return any(path[:depth] in nulled for depth in range(len(path) + 1))


def _plan(parent_type: GraphQLObjectType, fields: Any) -> list[tuple[Any, ...]]:
    """Per field of a selection on `parent_type`: its response key, details, node, name,
    definition (None for __typename), the source key it reads (if a key read), the Python
    type its value may be written as verbatim (if a built-in scalar), and nullability."""
    plan: list[tuple[Any, ...]] = []
    for key, details in fields.items():
        node = details[0].node
        name = node.name.value
        if name == "__typename":
            plan.append((key, details, node, name, None, None, None, True))
            continue
        field_def = parent_type.fields[name]
        return_type = field_def.type
        nullable = not isinstance(return_type, GraphQLNonNull)
        inner = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
        plan.append((key, details, node, name, field_def, getattr(field_def.resolve, KEY, None),
                     VERBATIM.get(inner), nullable))
    return plan


def _graphql_path(path: tuple[Any, ...]) -> Path | None:
    graphql_path = None
    for part in path:
        graphql_path = Path(graphql_path, part, None)
    return graphql_path
