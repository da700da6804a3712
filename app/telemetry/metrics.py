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

import asyncio
import bisect
import contextlib
import gc
import glob
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import orjson
from aiohttp import web
from opentelemetry import trace
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    ProcessCollector,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString
from starlette.requests import Request
from starlette.responses import Response

from app.config.settings import SERVICES
from app.upstream import failures
from loaders.declarations import ALL as LOADERS
from loaders.entities import ENTITIES
from loaders.spec import BatchSpec

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The label values known before any traffic (`start_series` creates their series at 0).
OUTCOMES = ("ok", "partial", "error", "refused", "aborted")
COST_KINDS = ("estimated", "actual")
CACHE_OUTCOMES = ("hit", "miss", "stale", "eviction")
PROTOCOLS = ("ws", "sse")
EVENT_OUTCOMES = ("fanned_out", "unwatched", "stale")
MESSAGE_KINDS = ("next", "error", "complete")
CLOSE_REASONS = ("slow_consumer", "token_expired", "shutdown", "init_timeout",
                 "too_many_connections", "unauthenticated", "bad_request")
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
    "Answers that used a deprecated field, by its coordinate and client name (bounded as in "
    "gateway_client_requests_total: apollographql-client-name, unknown, other).",
    ["coordinate", "client_name"],
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


# The SLOs' indicator (ops/prometheus/, README: For SREs): every GraphQL request by its
# operation type and by whose fault its errors were (app.core.errors.fault: none, client,
# server), so that availability counts only the gateway's failures and latency is judged per
# operation type. Every series exists from the start, so that the rules read zeros.
SLI_TYPES = ("query", "mutation", "subscription", "batch", "unknown")
SLI_FAULTS = ("none", "client", "server")
SLI_DURATION = Histogram(
    "gateway_sli_duration_seconds",
    "GraphQL requests for the SLOs: time to answer, by operation type (query, mutation, "
    "subscription, batch: several operations in one request, unknown: refused before it "
    "ran, a document that does not parse or validate, a body that is not JSON) and fault "
    "(none: no error; client: every error the client's own, refused and aborted requests "
    "included; server: any other error).",
    ["type", "fault"], buckets=LATENCY_BUCKETS,
)
for _type in SLI_TYPES:
    for _fault in SLI_FAULTS:
        SLI_DURATION.labels(_type, _fault)

# Change events received on /events, by what became of them (applied: evicted here;
# ignored: an older or repeated version, or no entity cache; held: evicted here but Redis is
# unreachable, answered 503 to be delivered again; rejected: a bad signature or body). Its
# silence while mutations succeed is the alert GatewayEventDeliveryStalled.
CHANGE_EVENT_OUTCOMES = ("applied", "ignored", "held", "rejected")
CHANGE_EVENTS = Counter(
    "gateway_change_events_total",
    "Change events received on /events, by outcome: applied, ignored (an older or repeated "
    "version, or no entity cache), held (Redis unreachable: answered 503, to be sent again), "
    "rejected (bad signature or body).",
    ["outcome"],
)
for _outcome in CHANGE_EVENT_OUTCOMES:
    CHANGE_EVENTS.labels(_outcome)


def change_event(outcome: str) -> None:
    CHANGE_EVENTS.labels(outcome).inc()


# A worker that the supervisor started again after one ended (app/http/server.py): with
# several workers, counted by the new worker itself (a crash leaves no live process to say).
WORKER_RESTARTS = Counter(
    "gateway_worker_restarts_total",
    "Worker processes started again after one ended (a crash, a kill), with GATEWAY_WORKERS "
    "above 1.",
)

PLANNED = Counter(
    "gateway_planned_operations_total",
    "Operations run by the plan executor: queries, and mutations whose payloads it "
    "completed (the rest: graphql-core's).",
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
    "sent; coalesced: replaced, while it waited for its entity's fan-out, by a newer one).",
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
    "over_capacity, unauthenticated, bad_request).",
    ["protocol", "reason"],
)

# -- business --------------------------------------------------------------------------------
# Counted on the gateway's own successful mutations (resolvers/mutations.py), not on the
# services' change events: a write made directly on a service is not counted here.
ORDERS_PLACED = Counter(
    "gateway_orders_placed_total",
    "Orders placed through the gateway's placeOrder (a repeat with the same idempotencyKey "
    "that the service answers with an order made earlier is not counted again).",
)
ORDER_VALUE = Counter(
    "gateway_order_value_cents_total",
    "Value of the orders placed through the gateway, in hundredths of the currency's unit "
    "(total_cents), by currency (ISO 4217 codes; at most 20, then other).",
    ["currency"],
)
ORDERS_CANCELLED = Counter(
    "gateway_orders_cancelled_total",
    "Orders cancelled through the gateway's cancelOrder (not an order cancelled already).",
)
REVIEWS_ADDED = Counter(
    "gateway_reviews_added_total",
    "Reviews written through the gateway's addReview (a repeat answered from its "
    "idempotencyKey is not counted again).",
)
MAX_CURRENCIES = 20
_currencies: set[str] = set()


def currency_label(currency: object) -> str:
    """The currency as a label: an ISO 4217 code, at most MAX_CURRENCIES of them."""
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isascii() \
            or not currency.isupper() or not currency.isalpha():
        return "other"
    if currency in _currencies:
        return currency
    with _operations_lock:
        if len(_currencies) >= MAX_CURRENCIES:
            return "other"
        _currencies.add(currency)
    return currency


# -- clients ---------------------------------------------------------------------------------
CLIENT_REQUESTS = Counter(
    "gateway_client_requests_total",
    "GraphQL requests by client (the apollographql-client-name and -version headers: "
    "CLIENT_NAMES_MAX names, each first sent by a signed-in caller or with a persisted "
    "operation, then other; unknown: no header) and outcome.",
    ["client_name", "client_version", "outcome"],
)
CLIENT_LATENCY = Histogram(
    "gateway_client_request_duration_seconds",
    "Time to answer a GraphQL request, by client name (bounded as in "
    "gateway_client_requests_total).",
    ["client_name"], buckets=LATENCY_BUCKETS,
)
MAX_CLIENT_VERSIONS = 10  # per client name
MAX_CLIENT_LABEL = 64  # characters; a longer name or version is `other`
_clients: dict[str, set[str]] = {}  # admitted name -> its admitted versions


def _printable(value: str) -> bool:
    return len(value) <= MAX_CLIENT_LABEL and value.isascii() and value.isprintable()


def client_labels(name: str | None, version: str | None, *, admit: bool, limit: int
                  ) -> tuple[str, str]:
    """The client's name and version as label values: bounded, since clients choose them.
    As with operation names, a name (and a version of an admitted name) not yet labelled is
    taken in only when `admit`, while fewer than `limit` names (MAX_CLIENT_VERSIONS
    versions) have been; else it is "other". No header: "unknown"."""
    if not name:
        return "unknown", "unknown"
    versions = _clients.get(name)
    if versions is None:
        if not admit or not _printable(name):
            return "other", "other"
        with _operations_lock:
            versions = _clients.get(name)
            if versions is None:
                if len(_clients) >= limit:
                    return "other", "other"
                versions = _clients[name] = set()
    if not version:
        return name, "unknown"
    if version in versions:
        return name, version
    if not admit or not _printable(version):
        return name, "other"
    with _operations_lock:
        if len(versions) >= MAX_CLIENT_VERSIONS:
            return name, "other"
        versions.add(version)
    return name, version


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


def upstream_codes() -> list[str]:
    """Every outcome an upstream call can end with: OK, or a code of the failure table."""
    table = [*failures.FAILURES.values(), *failures.STATUS_FAILURES.values(),
             failures.OTHER_5XX, failures.OTHER_4XX, failures.ODD_STATUS]
    return ["OK", *sorted({f.code for f in table})]


def start_series(subscription_fields: tuple[str, ...] = (),
                 deprecated_fields: tuple[str, ...] = ()) -> None:
    """Create, at 0, every series whose label values are known at start (in each process:
    with several workers each writes its zeros to the shared directory), so that `rate()`
    and the alerts read 0 on a fresh gateway rather than no data. Label values learnt from
    traffic (operation names, clients, currencies) appear when first seen."""
    for kind in COST_KINDS:
        OPERATION_COST.labels(kind)
    for operation in ("anonymous", "other"):
        for outcome in OUTCOMES:
            REQUESTS.labels(operation, outcome)
            REQUEST_LATENCY.labels(operation, outcome)
    for client in ("unknown", "other"):
        CLIENT_LATENCY.labels(client)
        for outcome in OUTCOMES:
            CLIENT_REQUESTS.labels(client, client, outcome)
        for coordinate in deprecated_fields:
            DEPRECATED_USES.labels(coordinate, client)
    codes = upstream_codes()
    # One route per service at least (the loaders' own; writes' routes appear when used):
    # enough for the sums by service that the alerts read.
    routes = {(spec.service, spec.path if isinstance(spec, BatchSpec) else spec.route)
              for spec in LOADERS}
    for service, route in sorted((s, r) for s, r in routes if r is not None):
        UPSTREAM_LATENCY.labels(service, route)
        for code in codes:
            UPSTREAM_CALLS.labels(service, route, code)
    for service in SERVICES:
        UPSTREAM_RETRIES.labels(service)
        RETRY_BUDGET_REFUSALS.labels(service)
        BREAKER_OPENED.labels(service)
    for spec in LOADERS:
        LOADER_BATCH_SIZE.labels(spec.name)
    for entity in ENTITIES:
        for outcome in CACHE_OUTCOMES:
            CACHE_EVENTS.labels(entity, outcome)
        for outcome in EVENT_OUTCOMES:
            SUBSCRIPTION_EVENTS.labels(entity, outcome)
    for protocol in PROTOCOLS:
        for field in subscription_fields:
            SUBSCRIPTIONS_ACTIVE.labels(protocol, field)
        for kind in MESSAGE_KINDS:
            SUBSCRIPTION_MESSAGES.labels(protocol, kind)
        for reason in CLOSE_REASONS:
            SUBSCRIPTION_CLOSES.labels(protocol, reason)


# -- exemplars ------------------------------------------------------------------------------
# A latency bucket links to the trace of a request it counted: the latest sampled (exported)
# observation of each bucket keeps its trace id, shown to a scraper asking for OpenMetrics
# (`# {trace_id="..."} 0.042 1733212345.1`). prometheus_client keeps exemplars only in
# single-process mode (its multiprocess values drop them), so the gateway keeps its own in
# both: each process holds the latest per bucket, and with several workers writes them, at
# most once a second, to `exemplars_<pid>.json` in the shared directory; whichever worker
# answers the scrape puts the newest of every process on the merged buckets.
EXEMPLAR_FLUSH_S = 1.0
_BucketKey = tuple[str, tuple[tuple[str, str], ...], str]  # family, labels, le
_Seen = tuple[str, float, float]  # trace id, value, when (Unix time)


class Exemplars:
    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory
        self.latest: dict[_BucketKey, _Seen] = {}
        self._flushed = 0.0
        self._flush_pending = False

    def record(self, family: str, labels: tuple[tuple[str, str], ...], le: str, value: float,
               trace_id: str) -> None:
        self.latest[(family, labels, le)] = (trace_id, value, time.time())
        if self.directory is not None:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_pending:
            return
        wait = self._flushed + EXEMPLAR_FLUSH_S - time.monotonic()
        if wait <= 0:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_pending = True
        loop.call_later(wait, self.flush)

    def _path(self, pid: int) -> str:
        assert self.directory is not None
        return os.path.join(self.directory, f"exemplars_{pid}.json")

    def flush(self) -> None:
        """Write this process's exemplars for the other workers (atomically: a reader sees
        the previous file or this one)."""
        self._flush_pending = False
        self._flushed = time.monotonic()
        if self.directory is None:
            return
        rows = [[family, labels, le, *seen] for (family, labels, le), seen in self.latest.items()]
        path = self._path(os.getpid())
        try:
            with open(path + ".tmp", "wb") as out:
                out.write(orjson.dumps(rows))
            os.replace(path + ".tmp", path)
        except OSError:
            pass  # exemplars are a convenience: never fail a request for them

    def merged(self) -> dict[_BucketKey, Exemplar]:
        """The newest exemplar of every bucket, across the workers."""
        newest: dict[_BucketKey, _Seen] = {}
        if self.directory is not None:
            own = os.path.basename(self._path(os.getpid()))
            for path in glob.glob(os.path.join(self.directory, "exemplars_*.json")):
                if os.path.basename(path) == own:
                    continue
                try:
                    with open(path, "rb") as file:
                        rows = orjson.loads(file.read())
                except (OSError, orjson.JSONDecodeError):
                    continue
                for family, labels, le, trace_id, value, at in rows:
                    key = (family, tuple(tuple(pair) for pair in labels), le)
                    seen = newest.get(key)
                    if seen is None or seen[2] < at:
                        newest[key] = (trace_id, value, at)
        for key, mine in self.latest.items():
            seen = newest.get(key)
            if seen is None or seen[2] <= mine[2]:
                newest[key] = mine
        return {key: Exemplar({"trace_id": trace_id}, value, at)
                for key, (trace_id, value, at) in newest.items()}

    def remove(self, pid: int) -> None:
        """Forget a process's exemplars (it ended)."""
        if self.directory is not None:
            with contextlib.suppress(OSError):
                os.remove(self._path(pid))


EXEMPLARS = Exemplars(os.environ.get(MULTIPROC_ENV) or None)


class Timed:
    """A latency histogram's series that also keeps, per bucket, the trace of a sampled
    observation (the exemplar). Made once per label set (they are bounded)."""

    __slots__ = ("_bounds", "_child", "_family", "_labels", "_les")

    def __init__(self, histogram: Histogram, *values: str) -> None:
        self._child = histogram.labels(*values)
        self._family = histogram._name
        self._labels = tuple(sorted(zip(histogram._labelnames, values, strict=True)))
        self._bounds = histogram._upper_bounds
        self._les = [floatToGoString(b) for b in self._bounds]

    def observe(self, value: float, trace_id: str | None = None) -> None:
        """`trace_id`: the hex id of the exported (sampled) trace this observation is part
        of, if any."""
        self._child.observe(value)
        if trace_id is not None:
            EXEMPLARS.record(self._family, self._labels,
                             self._les[bisect.bisect_left(self._bounds, value)], value,
                             trace_id)


_timed: dict[tuple[str, tuple[str, ...]], Timed] = {}


def timed(histogram: Histogram, *values: str) -> Timed:
    """The series of `histogram` at these label values (kept: label values are bounded)."""
    key = (histogram._name, values)
    series = _timed.get(key)
    if series is None:
        series = _timed[key] = Timed(histogram, *values)
    return series


def sampled_trace_id(span: trace.Span | None = None) -> str | None:
    """The trace id of `span` (by default the current one) when its trace is exported
    (sampled): only such a trace can be found from an exemplar."""
    ctx = (span or trace.get_current_span()).get_span_context()
    return format(ctx.trace_id, "032x") if ctx.trace_flags.sampled else None


class _WithExemplars:
    """A registry's metrics with the exemplars put on their histogram buckets."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        table = EXEMPLARS.merged()
        families = {key[0] for key in table}
        for metric in self.registry.collect():
            if metric.type == "histogram" and metric.name in families:
                metric.samples = [self._with(metric.name, sample, table)
                                  for sample in metric.samples]
            yield metric

    @staticmethod
    def _with(family: str, sample: Sample, table: dict[_BucketKey, Exemplar]) -> Sample:
        if not sample.name.endswith("_bucket"):
            return sample
        labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        exemplar = table.get((family, labels, sample.labels.get("le", "")))
        return sample._replace(exemplar=exemplar) if exemplar is not None else sample


def process_exit() -> None:
    """With several workers: this one's live gauges (breaker states) stop counting."""
    worker_ended(os.getpid())


def worker_ended(pid: int) -> None:
    """With several workers: a worker that ended, by itself or without saying so (a crash,
    SIGKILL, the OOM killer: then the supervisor calls this), is forgotten, or its last
    breaker and Redis states would count among the live ones for ever (an alert that never
    resolves), and its exemplars stay on the buckets."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
        EXEMPLARS.remove(pid)


class WorkersProcess(Collector):
    """With several workers: the process metrics (CPU, memory, open files) of every live
    worker, summed. prometheus_client's own describe one process, and in multi-process mode
    none is exported at all, which left the dashboard's CPU and memory panels empty. The
    workers are the processes whose metric files are in the shared directory."""

    SUMMED: ClassVar[dict[str, str]] = {
        "process_cpu_seconds": "CPU time of the gateway's live workers, in seconds.",
        "process_resident_memory_bytes": "Resident memory of the live workers.",
        "process_virtual_memory_bytes": "Virtual memory of the live workers.",
        "process_open_fds": "Open file descriptors of the live workers."}

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        totals = dict.fromkeys(self.SUMMED, 0.0)
        for pid in self.workers():
            # (Reads /proc/<pid>; a worker that ends meanwhile is skipped, not an error.)
            collector = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
            for family in collector.collect():
                if family.name in totals:
                    totals[family.name] += sum(sample.value for sample in family.samples)
        for name, help_text in self.SUMMED.items():
            kind = CounterMetricFamily if name == "process_cpu_seconds" else GaugeMetricFamily
            yield kind(name, help_text, value=totals[name])

    def workers(self) -> set[int]:
        pids = set()
        for name in os.listdir(self.directory):
            found = re.search(r"_(\d+)\.db$", name)
            if found and os.path.exists(f"/proc/{found.group(1)}"):
                pids.add(int(found.group(1)))
        return pids


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The metrics, and their media type: Prometheus's text format, or OpenMetrics (with
    the latency buckets' exemplars) when `accept` asks for it."""
    flush_gc()
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        # Every worker's samples, whichever worker answers.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(WorkersProcess(directory))
    else:
        registry = REGISTRY
    encoder, media_type = choose_encoder(accept or "")
    if media_type.startswith("application/openmetrics-text"):
        return encoder(_WithExemplars(registry)), media_type
    return encoder(registry), media_type


async def endpoint(request: Request) -> Response:
    body, media_type = exposition(request.headers.get("accept"))
    return Response(body, headers={"Content-Type": media_type})


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
    async def _metrics(request: web.Request) -> web.Response:
        body, media_type = exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": media_type})
