"""The gateway's observer (`app.core.observer`) as spans, metrics and log fields.

The parts it observes (loaders, the entity cache, the upstream client, the executor) report
events; this turns each into what it always was: a batch span and the batch-size histogram,
cache-hit attributes on the batch's span and the cache counters, a span per logical upstream
call with a `retry` event per retry, the call and retry counters, the breaker gauges. Span
names, attributes and metric names are the ones the dashboards and the waterfall read.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import Span, Status, StatusCode

from app.core.observer import CallObservation, FanOutObservation, Observer
from app.telemetry import metrics
from app.telemetry.children import child
from app.telemetry.logs import OPERATION

if TYPE_CHECKING:
    from opentelemetry.context import Context

_NULL: AbstractContextManager[None] = nullcontext()
# The batch span's cache counts (the draft's DataLoader attributes): keys found in the
# entity cache, and keys fetched.
HIT_COUNT = "graphql.dataloader.cache.hit_count"
MISS_COUNT = "graphql.dataloader.cache.miss_count"


class _Call(CallObservation):
    """A logical upstream call: its metrics always, its span in a recorded trace."""

    __slots__ = ("_route", "_service", "_span", "_started", "_token")

    def __init__(self, tracer: trace.Tracer, service: str, method: str, route: str) -> None:
        self._service = service
        self._route = route
        self._started = time.monotonic()
        self._token: Token[Context] | None = None
        # The call's span (its attempts are aiohttp's client spans under it); none when the
        # request is not recorded.
        self._span: Span | None = None
        if trace.get_current_span().is_recording():
            self._span = tracer.start_span(
                f"{service} {method} {route}",
                attributes={"gateway.upstream.service": service, "http.request.method": method,
                            "url.template": route})

    def __enter__(self) -> _Call:
        if self._span is not None:
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        span = self._span
        if span is not None and kind is not None:
            # Cancelled (a sibling field failed, the server shut down) or a bug: the span
            # still ends, saying so. A call that ended by `end` has no span left here.
            span.set_attribute("error.type", kind.__name__)
            span.set_status(Status(StatusCode.ERROR, kind.__name__))
            span.end()
        if self._token is not None:
            otel_context.detach(self._token)

    def attempt(self, number: int) -> None:
        if number > 1:
            child(metrics.UPSTREAM_RETRIES, self._service).inc()

    def retry(self, attempt: int, code: str, wait_s: float) -> None:
        if self._span is not None:
            self._span.add_event("retry", {"attempt": attempt, "error.type": code,
                                           "wait_ms": round(wait_s * 1000, 3)})

    def end(self, retries: int, code: str | None, message: str = "") -> None:
        child(metrics.UPSTREAM_CALLS, self._service, self._route, code or "OK").inc()
        span, self._span = self._span, None
        metrics.timed(metrics.UPSTREAM_LATENCY, self._service, self._route).observe(
            time.monotonic() - self._started, metrics.sampled_trace_id(span))
        if span is not None:
            span.set_attribute("gateway.upstream.retries", retries)
            if code is not None:
                span.set_attribute("error.type", code)
                span.set_status(Status(StatusCode.ERROR, message[:200]))
            span.end()


class _FanOut(FanOutObservation):
    """An event's fan-out: a root span of its own (the hub runs outside any request), sampled
    like a request's; the lookups and upstream calls of its subscribers' selections are its
    children."""

    __slots__ = ("_manager", "_span")

    def __init__(self, tracer: trace.Tracer, entity: str, entity_id: str, version: int) -> None:
        self._manager = tracer.start_as_current_span(
            "GraphQL Subscription Event", kind=trace.SpanKind.CONSUMER,
            attributes={"graphql.operation.type": "subscription",
                        "graphql.processing.type": "execute",
                        "gateway.event.type": entity, "gateway.event.id": entity_id,
                        "gateway.event.version": version})
        self._span: Span | None = None

    def __enter__(self) -> _FanOut:
        self._span = self._manager.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._manager.__exit__(kind, error, tb)

    def subscribers(self, count: int) -> None:
        if self._span is not None and self._span.is_recording():
            self._span.set_attribute("gateway.subscribers", count)


class TelemetryObserver(Observer):
    def __init__(self, tracer: trace.Tracer | None = None) -> None:
        self.tracer = tracer or trace.get_tracer("gateway")

    # -- loaders ---------------------------------------------------------------------------
    def batch(self, loader: str, size: int) -> AbstractContextManager[Any]:
        """The batch's span, in a recorded trace: it runs in the context of the resolver
        whose lookup started it, so the span is that resolver's child, and the upstream calls
        it makes are its own children."""
        child(metrics.LOADER_BATCH_SIZE, loader).observe(size)
        if not trace.get_current_span().is_recording():
            return _NULL
        return self.tracer.start_as_current_span(
            f"GraphQL DataLoader Batch {loader}",
            attributes={"graphql.dataloader.name": loader,
                        "graphql.dataloader.batch.size": size,
                        "graphql.processing.type": "dataloader_batch"})

    # -- the entity cache ------------------------------------------------------------------
    def cache_read(self, entity: str, hits: int, misses: int, stale: int) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes({HIT_COUNT: hits, MISS_COUNT: misses,
                                 "gateway.cache.stale": stale})
        if hits:
            child(metrics.CACHE_EVENTS, entity, "hit").inc(hits)
        if stale:
            child(metrics.CACHE_EVENTS, entity, "stale").inc(stale)
        if misses:
            child(metrics.CACHE_EVENTS, entity, "miss").inc(misses)

    def cache_bypassed(self, misses: int) -> None:
        trace.get_current_span().set_attributes({HIT_COUNT: 0, MISS_COUNT: misses})

    def stale_served(self, entity: str) -> None:
        child(metrics.CACHE_EVENTS, entity, "stale").inc(1)

    def evicted(self, entity: str) -> None:
        metrics.CACHE_EVENTS.labels(entity, "eviction").inc(1)

    def evictions_held(self, count: int) -> None:
        metrics.EVICTIONS_HELD.set(count)

    def hits_at_hand(self, entity: str, hits: int) -> None:
        child(metrics.CACHE_EVENTS, entity, "hit").inc(hits)

    # -- the upstream client ---------------------------------------------------------------
    def call(self, service: str, method: str, route: str) -> CallObservation:
        return _Call(self.tracer, service, method, route)

    def retry_refused(self, service: str) -> None:
        metrics.RETRY_BUDGET_REFUSALS.labels(service).inc()

    def breaker_changed(self, service: str, state: int, opened: bool) -> None:
        metrics.BREAKER_STATE.labels(service).set(state)
        if opened:
            metrics.BREAKER_OPENED.labels(service).inc()

    def quiet(self) -> AbstractContextManager[Any]:
        return suppress_http_instrumentation()

    # -- Redis -----------------------------------------------------------------------------
    def redis_changed(self, state: int, outage: bool) -> None:
        metrics.REDIS_STATE.set(state)
        if outage:
            metrics.REDIS_OUTAGES.inc()

    # -- execution -------------------------------------------------------------------------
    def operation_started(self, name: str | None) -> None:
        OPERATION.set(name)

    def operation_planned(self) -> None:
        metrics.PLANNED.inc()

    def deprecated_field_used(self, coordinate: str, client: str | None, *, admit: bool,
                              limit: int) -> None:
        # The client requests' bounded names (CLIENT_NAMES_MAX), so that the two join.
        name, _ = metrics.client_labels(client, None, admit=admit, limit=limit)
        metrics.DEPRECATED_USES.labels(coordinate, name).inc()

    def operation_cost(self, estimated: int, actual: int | None) -> None:
        metrics.OPERATION_COST.labels("estimated").observe(estimated)
        if actual is not None:
            metrics.OPERATION_COST.labels("actual").observe(actual)
            metrics.OPERATION_COST_DELTA.observe(estimated - actual)

    # -- business events -------------------------------------------------------------------
    def order_placed(self, currency: str, total_cents: int) -> None:
        metrics.ORDERS_PLACED.inc()
        if total_cents > 0:
            metrics.ORDER_VALUE.labels(metrics.currency_label(currency)).inc(total_cents)

    def order_cancelled(self) -> None:
        metrics.ORDERS_CANCELLED.inc()

    def review_added(self) -> None:
        metrics.REVIEWS_ADDED.inc()

    # -- subscriptions ---------------------------------------------------------------------
    def subscription_changed(self, protocol: str, field: str, delta: int) -> None:
        metrics.SUBSCRIPTIONS_ACTIVE.labels(protocol, field).inc(delta)

    def subscription_event(self, entity: str, outcome: str) -> None:
        metrics.SUBSCRIPTION_EVENTS.labels(entity, outcome).inc()

    def fan_out(self, entity: str, entity_id: str, version: int) -> FanOutObservation:
        return _FanOut(self.tracer, entity, entity_id, version)

    def subscription_message(self, protocol: str, kind: str) -> None:
        metrics.SUBSCRIPTION_MESSAGES.labels(protocol, kind).inc()

    def subscription_connection_closed(self, protocol: str, reason: str) -> None:
        metrics.SUBSCRIPTION_CLOSES.labels(protocol, reason).inc()
