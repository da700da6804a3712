"""Tracing: one tracer provider per process, its sampler and where its spans go.

Sampling is decided once per trace, at its root (the server span of a request), and followed
by every span under it and by the services (through `traceparent`):

- a sampled incoming `traceparent` is followed; otherwise a share of traces
  (`OTEL_TRACES_SAMPLER_ARG`) is sampled and exported;
- with `TRACES_KEEP_FAILED` the other traces are still recorded, not exported, and held by
  `RequestSpans` until their request ends: a request that failed has its trace exported
  after all. This is tail sampling of one's own spans, which the head decision alone cannot do;
- a request that asked for its waterfall (`X-Gateway-Debug`) is recorded whatever the ratio.

Without an exporter nothing is recorded but those waterfalls; spans are then non-recording
stand-ins that still carry a trace id, so logs, error responses and `traceparent` correlate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property

import aiohttp
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)

# Re-exported (`as`): app.http names the exporter type, and may not import OpenTelemetry.
from opentelemetry.sdk.trace.export import SpanExporter as SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

from app.config.settings import Settings
from app.telemetry.observer import TelemetryObserver

log = logging.getLogger("gateway.telemetry")

# Set (per request, before its server span starts) when the caller may see its waterfall.
RECORD_REQUEST: ContextVar[bool] = ContextVar("gateway_record_request", default=False)
# No spans for these paths: probes and scrapes would drown the requests. The instrumentation
# searches these patterns in scheme://Host/path: anchored at the end, so that a Host header
# cannot switch tracing off for /graphql.
UNTRACED_PATHS = r"/healthz$,/readyz$,/metrics$,/graphql/ide/\S+\.(?:js|css)$"
MAX_HELD_REQUESTS = 2_000  # requests whose spans are held until they end
MAX_SPANS_PER_REQUEST = 20_000


class GatewaySampler(Sampler):
    """Parent-based ratio sampling that can record what it does not export."""

    def __init__(self, ratio: float, exporting: bool, record_unsampled: bool) -> None:
        self._ratio = TraceIdRatioBased(ratio)
        self._exporting = exporting
        self._record_unsampled = record_unsampled

    def should_sample(
        self, parent_context: Context | None, trace_id: int, name: str,
        kind: SpanKind | None = None, attributes: Attributes = None,
        links: Sequence[Link] | None = None, trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context)
        parent_ctx = parent.get_span_context()
        if parent_ctx.is_valid and not parent_ctx.is_remote:
            # Inside the gateway: follow the local parent. A recorded parent is an SDK span
            # (a dropped one is a NonRecordingSpan), which stays so after it has ended.
            if parent_ctx.trace_flags.sampled:
                decision = Decision.RECORD_AND_SAMPLE
            elif isinstance(parent, ReadableSpan):
                decision = Decision.RECORD_ONLY
            else:
                decision = Decision.DROP
        else:
            if not self._exporting:
                sampled = False  # a caller's sampled flag must not make us record for nothing
            elif parent_ctx.is_valid:
                sampled = parent_ctx.trace_flags.sampled
            else:
                sampled = self._ratio.should_sample(
                    parent_context, trace_id, name).decision.is_sampled()
            if sampled:
                decision = Decision.RECORD_AND_SAMPLE
            elif self._record_unsampled or RECORD_REQUEST.get():
                decision = Decision.RECORD_ONLY
            else:
                decision = Decision.DROP
        return SamplingResult(
            decision, attributes if decision.is_recording() else None,
            parent_ctx.trace_state if parent_ctx.is_valid else None)

    def get_description(self) -> str:
        return f"GatewaySampler{{{self._ratio.get_description()}}}"


@dataclass
class _Request:
    """The spans of one request (one local root), held until the root ends."""

    spans: list[ReadableSpan]
    hold: bool  # unsampled, kept in case it fails: export it if it does
    failed: bool = False
    ids: list[int] = field(default_factory=list)  # its spans' ids, forgotten when it ends


class RequestSpans(SpanProcessor):
    """Holds each request's recorded spans until its local root span ends.

    Two uses: the debug waterfall (`take` a request's spans before its response is sent) and
    keeping failed requests (an unsampled request that failed is handed to the exporting
    processor when its root ends, as if it had been sampled). A request is its local root
    span (the server span), not its trace: concurrent requests may share a trace id (a page
    making several calls under one `traceparent`). Both uses are bounded. Spans start and end
    on the event loop's thread, so there is no locking.
    """

    def __init__(self, export: SpanProcessor | None, keep_failed: bool) -> None:
        self._export = export
        self._keep_failed = keep_failed and export is not None
        self._requests: dict[int, _Request] = {}  # by root span id
        self._root_of: dict[int, int] = {}  # span id -> its request's root span id

    @staticmethod
    def root_id(span: trace.Span) -> int:
        return span.get_span_context().span_id

    def take(self, root_id: int) -> list[ReadableSpan]:
        """The request's spans that have ended so far (for its waterfall)."""
        request = self._requests.get(root_id)
        return list(request.spans) if request is not None else []

    def fail(self, span: trace.Span) -> None:
        """The request `span` belongs to failed: export it even if it was not sampled."""
        root = self._root_of.get(span.get_span_context().span_id)
        request = self._requests.get(root) if root is not None else None
        if request is not None:
            request.failed = True

    def on_start(self, span: trace.Span, parent_context: Context | None = None) -> None:
        ctx = span.get_span_context()
        parent = getattr(span, "parent", None)
        if parent is None or parent.is_remote:  # a request's root
            hold = self._keep_failed and not ctx.trace_flags.sampled
            if hold or RECORD_REQUEST.get():
                if len(self._requests) >= MAX_HELD_REQUESTS:
                    self._forget(next(iter(self._requests)))  # the oldest is lost
                self._requests[ctx.span_id] = _Request([], hold, ids=[ctx.span_id])
                self._root_of[ctx.span_id] = ctx.span_id
            return
        # Its parent may have ended already (a resolver's children start after it has its
        # value): ids are kept until the request ends.
        root = self._root_of.get(parent.span_id)
        if root is None:
            return
        request = self._requests.get(root)
        if request is not None and len(request.ids) < MAX_SPANS_PER_REQUEST:
            self._root_of[ctx.span_id] = root
            request.ids.append(ctx.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        root = self._root_of.get(ctx.span_id)
        if root is None:
            return
        request = self._requests.get(root)
        if request is None:
            return
        request.spans.append(span)
        if root == ctx.span_id:  # the request is over
            self._forget(root)
            failed = request.failed or span.status.status_code is trace.StatusCode.ERROR
            if request.hold and failed and self._export is not None:
                for kept in request.spans:
                    self._export.on_end(_as_sampled(kept))

    def _forget(self, root: int) -> None:
        request = self._requests.pop(root)
        for span_id in request.ids:
            self._root_of.pop(span_id, None)

    def shutdown(self) -> None:
        self._requests.clear()
        self._root_of.clear()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _as_sampled(span: ReadableSpan) -> ReadableSpan:
    ctx = span.context
    assert ctx is not None
    return ReadableSpan(
        name=span.name,
        context=SpanContext(ctx.trace_id, ctx.span_id, ctx.is_remote,
                            TraceFlags(ctx.trace_flags | TraceFlags.SAMPLED), ctx.trace_state),
        parent=span.parent, resource=span.resource, attributes=span.attributes,
        events=span.events, links=span.links, kind=span.kind, status=span.status,
        start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def exporter_kinds(settings: Settings) -> list[str]:
    """The exporters asked for (OTEL_TRACES_EXPORTER is a comma-separated list)."""
    if settings.traces_exporter:
        return [k for k in settings.exporters() if k != "none"]
    endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    return ["otlp"] if endpoint else []


class _Fanout(SpanProcessor):
    """Several exporting processors as one (what RequestSpans hands kept traces to)."""

    def __init__(self, processors: list[SpanProcessor]) -> None:
        self.processors = processors

    def on_end(self, span: ReadableSpan) -> None:
        for processor in self.processors:
            processor.on_end(span)


@dataclass
class Telemetry:
    """The process's tracing, handed to every part that makes spans."""

    provider: TracerProvider
    tracer: trace.Tracer
    requests: RequestSpans
    exporting: bool
    all_fields: bool
    resolver_metrics_ratio: float

    @cached_property
    def observer(self) -> TelemetryObserver:
        """What the loaders, the cache, the client and the executor report to."""
        return TelemetryObserver(self.tracer)

    def aiohttp_trace_configs(self) -> list[aiohttp.TraceConfig] | None:
        """The upstream client's aiohttp hooks: a CLIENT span per upstream attempt, with
        traceparent injected, under the logical call's span (app/upstream/client.py); the
        stable HTTP attribute names. None without an exporter: nobody would see those spans,
        and they cost 20 us an attempt."""
        if not self.exporting:
            return None
        return [create_trace_config(tracer_provider=self.provider,
                                    sem_conv_opt_in_mode=_StabilityMode.HTTP)]

    def shutdown(self) -> None:
        self.provider.shutdown()


def build_telemetry(settings: Settings, exporter: SpanExporter | None = None) -> Telemetry:
    """The provider the settings ask for; `exporter` (tests) replaces the configured one and
    is fed synchronously."""
    # The ASGI instrumentation reads this once: the stable HTTP attribute names.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    kinds = ["test"] if exporter is not None else exporter_kinds(settings)
    processors: list[SpanProcessor] = []
    for kind in kinds:
        if kind == "test":
            assert exporter is not None
            processors.append(SimpleSpanProcessor(exporter))
        elif kind == "otlp":
            # Imported here: it pulls in protobuf and requests, needed only when used.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )

            processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        elif kind == "console":
            processors.append(SimpleSpanProcessor(ConsoleSpanExporter()))
    export = _Fanout(processors) if processors else None
    exporting = export is not None
    ratio = settings.traces_sample_ratio if exporting else 0.0
    keep_failed = settings.traces_keep_failed and exporting
    requests = RequestSpans(export, keep_failed)
    provider = TracerProvider(
        sampler=GatewaySampler(ratio, exporting, record_unsampled=keep_failed),
        resource=Resource.create({"service.name": settings.service_name}),
    )
    provider.add_span_processor(requests)
    for processor in processors:
        provider.add_span_processor(processor)
    if exporting:
        log.info("tracing", extra={"exporters": kinds, "sample_ratio": ratio,
                                   "keep_failed": keep_failed})
    return Telemetry(
        provider=provider,
        tracer=provider.get_tracer("gateway"),
        requests=requests,
        exporting=exporting,
        all_fields=settings.trace_all_fields,
        resolver_metrics_ratio=settings.resolver_metrics_ratio,
    )


def current_span_ids() -> tuple[int, int]:
    """The current span's trace id and span id (0, 0 outside a trace)."""
    ctx = trace.get_current_span().get_span_context()
    return ctx.trace_id, ctx.span_id


def trace_id_of(span: trace.Span | None = None) -> str | None:
    """The hex trace id of `span` (the current span by default), or None outside a trace."""
    ctx = (span or trace.get_current_span()).get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
