"""Resolver telemetry: one Strawberry schema extension makes the operation's span, a span per
resolver that does work, and the resolver latency metric. No resolver has tracing code.

The `resolve` hook is synchronous, on purpose: an async hook would turn every field into a
coroutine, which multiplies execution time on big lists. A field that is not traced costs
one dictionary lookup here. A traced one gets a span, named by its schema coordinate and
nested under the span of its nearest traced ancestor (so the trace reads as the query does),
made current while the resolver runs so that the DataLoader batch it starts, and the upstream
calls under that, become its children. The span ends when the resolver's value is ready: at
once, when its loader future settles (a done callback, no coroutine), or when its coroutine
returns.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from graphql import ExperimentalIncrementalExecutionResults, GraphQLObjectType, GraphQLSchema
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode
from strawberry.extensions import SchemaExtension
from strawberry.types.field import StrawberryField

from app.core.errors import GatewayError
from app.execution.context import RequestContext
from app.telemetry.metrics import RESOLVER_LATENCY, sampled_trace_id, timed
from app.telemetry.tracing import RECORD_REQUEST, Telemetry
from loaders.then import Then

# Span names and attributes: the GraphQL OpenTelemetry working group's draft conventions
# (github.com/graphql/otel-wg, spec/spans.yaml); the README lists the old names.
COORDINATE = "graphql.selection.field.coordinate"
PATH = "graphql.selection.path"
PROCESSING = "graphql.processing.type"
OPERATION_NAME = "graphql.operation.name"
OPERATION_TYPE = "graphql.operation.type"
DOCUMENT_HASH = "graphql.document.hash"
UNKNOWN_OPERATION = "GraphQL Operation"  # the span's name when its type is not known
MAX_DOCUMENT = 4096  # longer documents are recorded by their hash alone


class _Field:
    """What the hook needs of a traced field, computed once per schema."""

    __slots__ = ("attributes", "coordinate", "latency")

    def __init__(self, parent: str, name: str) -> None:
        self.coordinate = f"{parent}.{name}"
        self.latency = timed(RESOLVER_LATENCY, self.coordinate)
        # The span's attributes but its path (one dict copy per span).
        self.attributes = {COORDINATE: self.coordinate, "graphql.selection.field.name": name,
                           "graphql.selection.field.parent_type": parent,
                           PROCESSING: "resolve"}


def selection_path(keys: tuple[Any, ...]) -> str:
    """The draft's path: field names (or aliases) joined by dots, list indexes in brackets:
    `topProducts[0].reviews`."""
    out = ""
    for key in keys:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += f".{key}" if out else str(key)
    return out


def does_work(definition: Any) -> bool:
    """Whether a field's resolver may wait on something: it is async, or it takes `info`,
    the only way to reach the request's loaders and upstream client. A resolver of the parent
    alone (a price formatted from cents) is as trivial as a key read."""
    if not isinstance(definition, StrawberryField) or definition.base_resolver is None:
        return False
    resolver = definition.base_resolver
    return (inspect.iscoroutinefunction(resolver.wrapped_func)
            or "info" in resolver.signature.parameters)


def traced_fields(schema: GraphQLSchema, all_fields: bool) -> dict[tuple[str, str], _Field]:
    """The fields that get spans: the ones whose resolvers do work, or every field."""
    out: dict[tuple[str, str], _Field] = {}
    for type_name, graphql_type in schema.type_map.items():
        if type_name.startswith("__") or not isinstance(graphql_type, GraphQLObjectType):
            continue
        for field_name, field in graphql_type.fields.items():
            if all_fields or does_work((field.extensions or {}).get("strawberry-definition")):
                out[(type_name, field_name)] = _Field(type_name, field_name)
    return out


def error_class(error: BaseException) -> str:
    """The error's class as clients see it: its `extensions.code`."""
    original = getattr(error, "original_error", None)
    if isinstance(original, GatewayError):
        return original.code
    if isinstance(error, GatewayError):
        return error.code
    code = (getattr(error, "extensions", None) or {}).get("code")
    return str(code) if code else type(original or error).__name__


def _path_keys(info: Any) -> tuple[Any, ...]:
    keys = getattr(info, "keys", None)  # the plan executor's info carries them
    return keys if keys is not None else tuple(info.path.as_list())


class Tracing(SchemaExtension):
    def __init__(self, *, telemetry: Telemetry, fields: dict[tuple[str, str], _Field]) -> None:
        super().__init__()
        self._tracer = telemetry.tracer
        self._exporting = telemetry.exporting
        self._requests = telemetry.requests
        self._fields = fields
        self._metrics_ratio = telemetry.resolver_metrics_ratio
        self._metrics = False
        self._recording = False
        self._active = False
        self._root: Context | None = None
        self._spans: dict[tuple[Any, ...], Context] = {}

    # -- the operation ----------------------------------------------------------------------
    def on_operation(self) -> Iterator[None]:
        ec = self.execution_context
        if not self._exporting and not RECORD_REQUEST.get():
            # Without an exporter, and no debug caller to show a waterfall to, nobody reads
            # this request's spans: no operation span (its children, dropped as well, hang
            # off the server span, which gives the trace id to logs and errors). It was a
            # tenth of a small query's CPU.
            self._metrics = self._metrics_ratio > 0 and random.random() < self._metrics_ratio
            self._active = self._metrics
            if isinstance(ec.context, RequestContext):
                ec.context.resolver_hooks = self._active
            yield
            return
        span = self._tracer.start_span(UNKNOWN_OPERATION)
        # Resolver spans are most of a trace's cost (hundreds on a big list): they are made
        # for sampled traces and for debug callers. A trace recorded only in case its request
        # fails (TRACES_KEEP_FAILED) keeps its operation, batches and calls, which carry the
        # failure, its retries and its timing.
        self._recording = span.is_recording() and (
            span.get_span_context().trace_flags.sampled or RECORD_REQUEST.get())
        self._metrics = self._metrics_ratio > 0 and random.random() < self._metrics_ratio
        self._active = self._recording or self._metrics
        context = ec.context
        if isinstance(context, RequestContext):
            # The plan executor skips the resolver hook altogether for this request.
            context.resolver_hooks = self._active
        self._root = trace.set_span_in_context(span)
        token = otel_context.attach(self._root)
        try:
            yield
        finally:
            try:
                self._settle_operation(span)
            finally:
                otel_context.detach(token)
                span.end()
                self._spans.clear()

    def _settle_operation(self, span: Span) -> None:
        ec = self.execution_context
        result: Any = ec.result
        if isinstance(result, ExperimentalIncrementalExecutionResults):
            # @defer/@stream: the operation's span covers its first part; the deferred
            # fields' spans, children of it, end as their parts are sent.
            result = result.initial_result
        errors = (result.errors if result is not None else None) \
            or ec.pre_execution_errors
        if span.is_recording():
            self._describe(span)
            hits = ec.context.loaders.hits_at_hand \
                if isinstance(ec.context, RequestContext) else 0
            if hits:
                span.set_attribute("gateway.cache.hits_at_hand", hits)
            if errors:
                span.set_status(Status(StatusCode.ERROR, "the response has errors"))
                span.set_attribute("graphql.errors.count", len(errors))
                span.set_attribute("error.type", error_class(errors[0]))
        if errors:
            self._requests.fail(span)

    def _describe(self, span: Span) -> None:
        """Named by the operation's type (`query`), as the draft asks: client-chosen names
        would make span names unbounded. An operation of the persisted-query manifest
        (trusted documents: a bounded set) is named `query Name`."""
        ec = self.execution_context
        name = ec.operation_name
        kind = None
        if ec.graphql_document is not None:
            try:
                kind = ec.operation_type.value
            except Exception:  # no such operation: validation reports it
                kind = None
        if kind:
            trusted = isinstance(ec.context, RequestContext) and ec.context.manifest_operation
            span.update_name(f"{kind} {name}" if trusted and name else kind)
            span.set_attribute(OPERATION_TYPE, kind)
        if name:
            span.set_attribute(OPERATION_NAME, name)
        if ec.query:
            if len(ec.query) <= MAX_DOCUMENT:
                span.set_attribute("graphql.document", ec.query)
            span.set_attribute(DOCUMENT_HASH,
                               "sha256:" + hashlib.sha256(ec.query.encode()).hexdigest())

    # -- resolvers --------------------------------------------------------------------------
    def resolve(self, _next: Callable[..., Any], root: Any, info: Any, *args: Any,
                **kwargs: Any) -> Any:
        field = self._fields.get((info.parent_type.name, info.field_name))
        if field is None or not self._active:
            return _next(root, info, *args, **kwargs)
        start = time.perf_counter()
        span: Span | None = None
        token = None
        if self._recording:
            keys = _path_keys(info)
            attributes: dict[str, Any] = {**field.attributes, PATH: selection_path(keys)}
            span = self._tracer.start_span(field.coordinate, context=self._parent(keys),
                                           attributes=attributes)
            ctx = trace.set_span_in_context(span, self._root)
            self._spans[keys] = ctx
            token = otel_context.attach(ctx)
        try:
            value = _next(root, info, *args, **kwargs)
        except Exception as error:
            self._end(field, span, start, error)
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
        if isinstance(value, Then):
            value.future.add_done_callback(partial(self._settled, field, span, start))
        elif isinstance(value, asyncio.Future):
            value.add_done_callback(partial(self._settled, field, span, start))
        elif asyncio.iscoroutine(value) or hasattr(value, "__await__"):
            return self._awaited(value, field, span, start)
        else:
            self._end(field, span, start, None)
        return value

    def _parent(self, keys: tuple[Any, ...]) -> Context | None:
        spans = self._spans
        for end in range(len(keys) - 1, 0, -1):
            ctx = spans.get(keys[:end])
            if ctx is not None:
                return ctx
        return self._root

    async def _awaited(self, value: Any, field: _Field, span: Span | None, start: float) -> Any:
        token = otel_context.attach(trace.set_span_in_context(span)) if span else None
        try:
            result = await value
        except BaseException as error:  # cancelled too (graphql-core cancels siblings)
            self._end(field, span, start, error)
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
        self._end(field, span, start, None)
        return result

    def _settled(self, field: _Field, span: Span | None, start: float,
                 future: asyncio.Future[Any]) -> None:
        error = (asyncio.CancelledError() if future.cancelled()
                 else future.exception())
        self._end(field, span, start, error)

    def _end(self, field: _Field, span: Span | None, start: float,
             error: BaseException | None) -> None:
        if self._metrics:
            field.latency.observe(time.perf_counter() - start,
                                  sampled_trace_id(span) if span is not None else None)
        if span is not None:
            if error is not None:
                span.set_attribute("error.type", error_class(error))
                span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
            span.end()


def tracing_factory(telemetry: Telemetry, schema: GraphQLSchema) -> Callable[[], Tracing]:
    fields = traced_fields(schema, telemetry.all_fields)
    return partial(Tracing, telemetry=telemetry, fields=fields)
