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
from dataclasses import dataclass

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
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

from app.settings import Settings

log = logging.getLogger("gateway.telemetry")

# Set (per request, before its server span starts) when the caller may see its waterfall.
RECORD_REQUEST: ContextVar[bool] = ContextVar("gateway_record_request", default=False)
# Spans are not exported for these paths: probes and scrapes would drown the requests.
UNTRACED_PATHS = "/healthz,/readyz,/metrics"
MAX_HELD_TRACES = 2_000  # unsampled traces held until their request ends
MAX_SPANS_PER_TRACE = 20_000


class GatewaySampler(Sampler):
    """Parent-based ratio sampling that can record what it does not export."""

    def __init__(self, ratio: float, record_unsampled: bool, recorded: set[int]) -> None:
        self._ratio = TraceIdRatioBased(ratio)
        self._record_unsampled = record_unsampled
        # Traces recorded but not sampled, until their local root ends (RequestSpans). Their
        # spans' contexts say "not sampled", and a parent that has ended no longer says it
        # is recording: this set is what tells their later spans to record.
        self._recorded = recorded

    def should_sample(
        self, parent_context: Context | None, trace_id: int, name: str,
        kind: SpanKind | None = None, attributes: Attributes = None,
        links: Sequence[Link] | None = None, trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context)
        parent_ctx = parent.get_span_context()
        if parent_ctx.is_valid and not parent_ctx.is_remote:
            # Inside the gateway: follow the local parent, recorded or not.
            if parent_ctx.trace_flags.sampled:
                decision = Decision.RECORD_AND_SAMPLE
            elif trace_id in self._recorded:
                decision = Decision.RECORD_ONLY
            else:
                decision = Decision.DROP
        else:
            if parent_ctx.is_valid:
                sampled = parent_ctx.trace_flags.sampled
            else:
                sampled = self._ratio.should_sample(
                    parent_context, trace_id, name).decision.is_sampled()
            if sampled:
                decision = Decision.RECORD_AND_SAMPLE
            elif self._record_unsampled or RECORD_REQUEST.get():
                decision = Decision.RECORD_ONLY
                if len(self._recorded) >= MAX_HELD_TRACES:
                    self._recorded.pop()  # a lost root's: never grow without bound
                self._recorded.add(trace_id)
            else:
                decision = Decision.DROP
        return SamplingResult(
            decision, attributes if decision.is_recording() else None,
            parent_ctx.trace_state if parent_ctx.is_valid else None)

    def get_description(self) -> str:
        return f"GatewaySampler{{{self._ratio.get_description()}}}"


@dataclass
class _Held:
    spans: list[ReadableSpan]
    failed: bool = False


class RequestSpans(SpanProcessor):
    """Holds a request's recorded spans until its local root span ends.

    Two uses: the debug waterfall (`watch` a trace, `take` its spans before the response is
    sent) and keeping failed requests (an unsampled trace whose request failed is handed to
    the exporting processor when its root ends, as if it had been sampled). Both are bounded.
    Spans end on the event loop's thread, so there is no locking.
    """

    def __init__(self, export: SpanProcessor | None, keep_failed: bool) -> None:
        self._export = export
        self._keep_failed = keep_failed and export is not None
        self._held: dict[int, _Held] = {}
        self._watched: dict[int, list[ReadableSpan]] = {}
        self.recorded: set[int] = set()  # shared with the sampler

    def watch(self, trace_id: int) -> None:
        self._watched.setdefault(trace_id, [])

    def take(self, trace_id: int) -> list[ReadableSpan]:
        return self._watched.pop(trace_id, [])

    def fail(self, trace_id: int) -> None:
        """The request of `trace_id` failed: export its trace even if it was not sampled."""
        held = self._held.get(trace_id)
        if held is not None:
            held.failed = True

    def on_start(self, span: trace.Span, parent_context: Context | None = None) -> None:
        if not self._keep_failed or span.get_span_context().trace_flags.sampled:
            return
        trace_id = span.get_span_context().trace_id
        if trace_id not in self._held:
            if len(self._held) >= MAX_HELD_TRACES:
                self._held.pop(next(iter(self._held)))  # the oldest: its request is lost
            self._held[trace_id] = _Held([])

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        watched = self._watched.get(ctx.trace_id)
        if watched is not None and len(watched) < MAX_SPANS_PER_TRACE:
            watched.append(span)
        held = self._held.get(ctx.trace_id) if not ctx.trace_flags.sampled else None
        if held is not None and len(held.spans) < MAX_SPANS_PER_TRACE:
            held.spans.append(span)
        if span.parent is None or span.parent.is_remote:  # the request's local root
            self.recorded.discard(ctx.trace_id)
            self._watched.pop(ctx.trace_id, None)
            held = self._held.pop(ctx.trace_id, None)
            if held is not None and (held.failed or span.status.status_code
                                     is trace.StatusCode.ERROR):
                assert self._export is not None
                for kept in held.spans:
                    self._export.on_end(_as_sampled(kept))

    def shutdown(self) -> None:
        self._held.clear()
        self._watched.clear()

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


def exporter_kind(settings: Settings) -> str:
    if settings.traces_exporter:
        return settings.traces_exporter
    endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    return "otlp" if endpoint else "none"


@dataclass
class Telemetry:
    """The process's tracing, handed to every part that makes spans."""

    provider: TracerProvider
    tracer: trace.Tracer
    requests: RequestSpans
    exporting: bool
    all_fields: bool
    resolver_metrics_ratio: float

    def aiohttp_trace_config(self) -> aiohttp.TraceConfig | None:
        """A CLIENT span per upstream attempt, with traceparent injected, under the logical
        call's span (app/upstream.py); the stable HTTP attribute names. None without an
        exporter: nobody would see those spans, and they cost 20 us an attempt."""
        if not self.exporting:
            return None
        return create_trace_config(tracer_provider=self.provider,
                                   sem_conv_opt_in_mode=_StabilityMode.HTTP)

    def shutdown(self) -> None:
        self.provider.shutdown()


def build_telemetry(settings: Settings, exporter: SpanExporter | None = None) -> Telemetry:
    """The provider the settings ask for; `exporter` (tests) replaces the configured one and
    is fed synchronously."""
    # The ASGI instrumentation reads this once: the stable HTTP attribute names.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    kind = "test" if exporter is not None else exporter_kind(settings)
    export: SpanProcessor | None = None
    if exporter is not None:
        export = SimpleSpanProcessor(exporter)
    elif kind == "otlp":
        # Imported here: the exporter pulls in protobuf and requests, needed only when used.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        export = BatchSpanProcessor(OTLPSpanExporter())
    elif kind == "console":
        export = SimpleSpanProcessor(ConsoleSpanExporter())
    exporting = export is not None
    ratio = settings.traces_sample_ratio if exporting else 0.0
    keep_failed = settings.traces_keep_failed and exporting
    requests = RequestSpans(export, keep_failed)
    provider = TracerProvider(
        sampler=GatewaySampler(ratio, record_unsampled=keep_failed, recorded=requests.recorded),
        resource=Resource.create({"service.name": settings.service_name}),
    )
    provider.add_span_processor(requests)
    if export is not None:
        provider.add_span_processor(export)
    if exporting:
        log.info("tracing", extra={"exporter": kind, "sample_ratio": ratio,
                                   "keep_failed": keep_failed})
    return Telemetry(
        provider=provider,
        tracer=provider.get_tracer("gateway"),
        requests=requests,
        exporting=exporting,
        all_fields=settings.trace_all_fields,
        resolver_metrics_ratio=settings.resolver_metrics_ratio,
    )


def trace_id_of(span: trace.Span | None = None) -> str | None:
    """The hex trace id of `span` (the current span by default), or None outside a trace."""
    ctx = (span or trace.get_current_span()).get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
