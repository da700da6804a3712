"""Prometheus metrics, all in one place, and the `/metrics` endpoint.

With several worker processes (GATEWAY_WORKERS > 1), `python -m app` points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before any worker starts: each process writes
its samples there and `/metrics`, whichever worker answers it, sums them. Labels are bounded:
schema coordinates, services, route templates, error codes, and at most
`MAX_OPERATION_NAMES` operation names (clients choose those), never ids or raw paths.

An operation name becomes a label only once an authenticated caller or a persisted
operation of the manifest has used it (`operation_label`; in development mode, any caller):
anonymous callers choose any names they like, and would otherwise fill the table with
made-up ones and push the real ones into "other". With METRICS_PORT, `/metrics` is served on
a port of its own (`MetricsServer`) and not on the public one.
"""

from __future__ import annotations

import gc
import os
import threading
import time

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_OPERATION_NAMES = 200
# Seconds: from a cache hit (well under a millisecond) to a request at its deadline (2 s).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0)

REQUESTS = Counter(
    "gateway_requests_total",
    "GraphQL requests by operation name and outcome (ok, partial: data with errors, error: "
    "no data, refused: rejected before execution: bad input, limits, rate limit; aborted: "
    "the client left or was too slow before its request was read).",
    ["operation", "outcome"],
)
REQUEST_LATENCY = Histogram(
    "gateway_request_duration_seconds",
    "Time to answer a GraphQL request, by operation name and outcome.",
    ["operation", "outcome"], buckets=LATENCY_BUCKETS,
)
# Operation costs by the IBM cost directives: from a single object to the largest limit.
COST_BUCKETS = (0, 1, 5, 10, 50, 100, 500, 1000, 5000, 10_000, 50_000, 100_000)
OPERATION_COST = Histogram(
    "gateway_operation_cost",
    "Operations' cost by the IBM GraphQL cost directives: estimated (before execution, what "
    "the rate limit charges) and actual (what the response held, what it is refunded to).",
    ["kind"], buckets=COST_BUCKETS,
)
OPERATION_COST_DELTA = Histogram(
    "gateway_operation_cost_delta",
    "Estimated minus actual cost per operation: how much the estimate over-charges.",
    buckets=COST_BUCKETS,
)
DEPRECATED_USES = Counter(
    "gateway_deprecated_field_uses_total",
    "Answers that used a deprecated field, by its coordinate and the client: a signed-in "
    "caller's app (apollographql-client-name) or token subject, the first 200 seen (then "
    "`other`); anonymous callers are `anonymous`.",
    ["coordinate", "client"],
)
RESOLVER_LATENCY = Histogram(
    "gateway_resolver_duration_seconds",
    "Time from a resolver's call to its value, by schema coordinate (resolvers that do work: "
    "the ones traced).",
    ["coordinate"], buckets=LATENCY_BUCKETS,
)
LOADER_BATCH_SIZE = Histogram(
    "gateway_loader_batch_size",
    "Keys per DataLoader batch, by loader.",
    ["loader"], buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
CACHE_EVENTS = Counter(
    "gateway_cache_events_total",
    "Entity cache lookups and evictions, by entity type and outcome "
    "(hit, miss, stale, eviction).",
    ["entity", "outcome"],
)
UPSTREAM_CALLS = Counter(
    "gateway_upstream_calls_total",
    "Logical upstream calls (retries included in one), by service, route template and outcome "
    "(OK or the error code: these are the upstream errors by class).",
    ["service", "route", "outcome"],
)
UPSTREAM_LATENCY = Histogram(
    "gateway_upstream_duration_seconds",
    "Time of a logical upstream call, retries and their waits included, by service and route "
    "template.",
    ["service", "route"], buckets=LATENCY_BUCKETS,
)
UPSTREAM_RETRIES = Counter(
    "gateway_upstream_retries_total", "Upstream attempts that were retries, by service.",
    ["service"],
)
RETRY_BUDGET_REFUSALS = Counter(
    "gateway_retry_budget_refusals_total",
    "Retries not made because the service's retry budget was spent, by service.",
    ["service"],
)
BREAKER_STATE = Gauge(
    "gateway_circuit_state",
    "Circuit breaker state per service: 0 closed, 1 half-open, 2 open (with several workers: "
    "the worst among live processes).",
    ["service"], multiprocess_mode="livemax",
)
BREAKER_OPENED = Counter(
    "gateway_circuit_opened_total", "Times a service's circuit breaker opened.", ["service"],
)
REDIS_STATE = Gauge(
    "gateway_redis_state",
    "Redis as this gateway sees it (REDIS_URL): 0 up, 1 probing, 2 down: skipped, every "
    "operation on its fallback (0 too without Redis; with several workers: the worst among "
    "live processes).",
    multiprocess_mode="livemax",
)
REDIS_OUTAGES = Counter(
    "gateway_redis_outages_total",
    "Times Redis went down (an operation failed or timed out, and its breaker opened); "
    "counts outages shorter than a scrape interval too.",
)
EVICTIONS_HELD = Gauge(
    "gateway_cache_evictions_held",
    "Evictions made by this gateway that Redis has not heard of yet (it was unreachable): "
    "sent once it is back; while any is held, the gateway reads around its caches.",
    multiprocess_mode="livesum",
)
# Why a request or connection ended before its request was read (app/http/connections.py,
# app/http/transport.py): the client's doing or the limits' (README: Security, Slow clients and
# big inputs). Never a 500, and never among gateway_requests_total's errors.
ABORT_REASONS = ("header_timeout", "body_timeout", "headers_too_large", "over_capacity",
                 "client_disconnect")
HTTP_ABORTED = Counter(
    "gateway_http_aborted_total",
    "Requests or connections that ended before their request was read, by reason: "
    "header_timeout and body_timeout (408, the client was too slow), headers_too_large "
    "(431), over_capacity (503: MAX_CONNECTIONS), client_disconnect (the client left "
    "mid-request).",
    ["reason"],
)
for _reason in ABORT_REASONS:
    HTTP_ABORTED.labels(_reason)  # every reason shows, at 0, from the start


def aborted(reason: str) -> None:
    HTTP_ABORTED.labels(reason).inc()


PLANNED = Counter(
    "gateway_planned_operations_total",
    "Operations run by the breadth-first executor (the rest: graphql-core's).",
)

SUBSCRIPTIONS_ACTIVE = Gauge(
    "gateway_subscriptions_active",
    "Subscriptions open now, by protocol (ws: graphql-transport-ws, sse: GraphQL over "
    "Server-Sent Events) and root field.",
    ["protocol", "field"], multiprocess_mode="livesum",
)
SUBSCRIPTION_EVENTS = Counter(
    "gateway_subscription_events_total",
    "Change events the subscription hub received, by entity type and outcome (fanned_out: "
    "someone here watches its type; unwatched; stale: an older or repeated version, nothing "
    "sent).",
    ["entity", "outcome"],
)
SUBSCRIPTION_MESSAGES = Counter(
    "gateway_subscription_messages_total",
    "Messages sent to subscribers, by protocol and kind (next, error, complete).",
    ["protocol", "kind"],
)
SUBSCRIPTION_CLOSES = Counter(
    "gateway_subscription_connections_closed_total",
    "Subscription connections the gateway closed or refused, by protocol and reason "
    "(slow_consumer, token_expired, shutdown, init_timeout, too_many_connections, "
    "unauthenticated, bad_request).",
    ["protocol", "reason"],
)

# The event loop stops while the cycle collector runs: under load a young-generation pass
# walks every in-flight request's objects, tens of milliseconds that land on whichever
# requests are running (their p99) and on the CPU per request.
GC_PAUSE = Histogram(
    "gateway_gc_pause_seconds", "Pauses of Python's cycle collector, by generation.",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
_GC_CHILDREN = tuple(GC_PAUSE.labels(str(generation)) for generation in range(3))
# The callback runs inside whatever allocation started the collection, possibly one made
# while prometheus_client holds its lock (with several workers, one lock for all values):
# it must not observe there. It notes the pause in a plain list; flush_gc() observes later.
_gc_pending: list[list[float]] = [[], [], []]
_gc_started: list[float] = [0.0]
MAX_PENDING_PAUSES = 10_000  # per generation, if nothing flushes for a long while


def _time_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
        return
    pending = _gc_pending[info["generation"]]
    if len(pending) < MAX_PENDING_PAUSES:
        pending.append(time.perf_counter() - _gc_started[0])


def flush_gc() -> None:
    """Observe the pauses noted since the last flush (from the event loop: each request,
    and each scrape)."""
    for generation, child in enumerate(_GC_CHILDREN):
        if _gc_pending[generation]:
            pauses, _gc_pending[generation] = _gc_pending[generation], []
            for pause in pauses:
                child.observe(pause)


def watch_gc() -> None:
    """Time every collection of this process (once: a callback per process)."""
    if _time_gc not in gc.callbacks:
        gc.callbacks.append(_time_gc)


_operations: set[str] = set()
_operations_lock = threading.Lock()


def operation_label(name: str | None, *, admit: bool) -> str:
    """The operation name as a label value: bounded, since clients choose names. A name not
    yet labelled is taken in only when `admit` (the request came from an authenticated
    caller, or ran an operation of the persisted-query manifest); else it is "other"."""
    if not name:
        return "anonymous"
    if name in _operations:
        return name
    if not admit:
        return "other"
    with _operations_lock:
        if len(_operations) >= MAX_OPERATION_NAMES:
            return "other"
        _operations.add(name)
    return name


MAX_CLIENTS = 200
_clients: set[str] = set()


def client_label(client: str | None) -> str:
    """A client as a label value: bounded (the first MAX_CLIENTS seen, then "other");
    None (an anonymous caller) is "anonymous"."""
    if client is None:
        return "anonymous"
    if client in _clients:
        return client
    with _operations_lock:
        if len(_clients) >= MAX_CLIENTS:
            return "other"
        _clients.add(client)
    return client


def process_exit() -> None:
    """With several workers: this one's live gauges (breaker states) stop counting."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())


def exposition() -> bytes:
    """The metrics in Prometheus's text format."""
    flush_gc()
    if os.environ.get(MULTIPROC_ENV):
        # Every worker's samples, whichever worker answers.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


async def endpoint(_: Request) -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


class MetricsServer:
    """`GET /metrics` alone on its own port (METRICS_PORT), in the gateway's event loop, so
    that the public port does not publish the gateway's internals (operation names, services,
    error rates): a deployment exposes the main port and keeps this one for its scraper.
    With several workers, each binds it with SO_REUSEPORT and any of them answers (the
    samples of all)."""

    def __init__(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port,
                              reuse_port=self.reuse_port or None).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    async def _metrics(_: web.Request) -> web.Response:
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
