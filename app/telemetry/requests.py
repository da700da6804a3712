"""Per-request telemetry around the whole app, as ASGI middleware (no per-field cost):

    DebugRecording -> the server span -> AccessLog -> app

The server span is OpenTelemetry's ASGI middleware when spans are exported (its HTTP
attributes are what a tracing backend shows). Without an exporter nobody reads those
attributes, and collecting them was a third of the time of a response-cache hit: `ServerSpan`
starts the same span (its trace id for logs and errors, the caller's traceparent continued,
the root of a debug waterfall) with no attributes.

`DebugRecording` marks a request whose caller may see its waterfall before its server span
is sampled, so that it is recorded whatever the sampling ratio. `AccessLog` writes one line per
request (inside the server span, so the line has its trace id) and counts GraphQL requests
and their latency by operation and outcome.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from typing import Any, cast

from graphql import get_operation_ast
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware, asgi_getter
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config.settings import Settings
from app.core.errors import HTTPRefusal, fault
from app.security.auth import Authenticator
from app.telemetry import metrics
from app.telemetry.children import child
from app.telemetry.tracing import RECORD_REQUEST, UNTRACED_PATHS, Telemetry

# The scope state's key naming why a request was abandoned before it was read (set by
# app/http/connections.py and app/http/transport.py, which may not be imported from here).
ABORTED = "aborted"

access_log = logging.getLogger("gateway.access")
DEBUG_HEADER = "x-gateway-debug"
# What Apollo's clients send (clientAwareness): per-client request metrics.
CLIENT_NAME = "apollographql-client-name"
CLIENT_VERSION = "apollographql-client-version"
GRAPHQL_PATH = "/graphql"
BATCH = "[batch]"  # the operation a batch of operations is logged and counted as


def debug_allowed(settings: Settings, value: str | None) -> bool:
    """Whether a caller sending `X-Gateway-Debug: value` may see the request's waterfall:
    anyone in development mode; elsewhere only with the configured DEBUG_TOKEN."""
    if not value:
        return False
    if settings.dev_mode:
        return True
    token = settings.debug_token
    return bool(token) and hmac.compare_digest(value.encode(), token.encode())


class DebugRecording:
    def __init__(self, app: ASGIApp, settings: Settings, auth: Authenticator) -> None:
        self.app = app
        self.settings = settings
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and await self._may_debug(scope):
            RECORD_REQUEST.set(True)  # this request's task only
        await self.app(scope, receive, send)

    async def _may_debug(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        value = headers.get(DEBUG_HEADER)
        if not value:
            return False
        if debug_allowed(self.settings, value):
            return True
        if "authorization" not in headers:
            return False
        # An admin may: the token is verified here (and again by the view), only for
        # requests asking to be debugged, so that nobody else can make a request costly.
        try:
            return (await self.auth.viewer(headers)).admin
        except HTTPRefusal:
            return False


class ServerSpan:
    """The request's SERVER span, without HTTP attributes (no exporter: see the module)."""

    def __init__(self, app: ASGIApp, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer
        # The same paths as the instrumentation's, matched on the path alone.
        self.untraced = re.compile("|".join(f"(?:{p})" for p in UNTRACED_PATHS.split(",")))
        # The headers the configured propagators read (traceparent, tracestate, baggage by
        # default): a request without any of them has no parent context to extract.
        self.propagated = frozenset(f.lower().encode()
                                    for f in propagate.get_global_textmap().fields)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.untraced.search(scope["path"]):
            await self.app(scope, receive, send)
            return
        parent = None
        if any(name in self.propagated for name, _ in scope["headers"]):
            # The instrumentation's own reading of the headers (first value, any case, every
            # configured propagator).
            # (The scope is a dict, as `asgi_getter`, a `Getter[dict]`, expects.)
            parent = propagate.extract(cast("dict[str, Any]", scope), getter=asgi_getter)
        with self.tracer.start_as_current_span(f"{scope['method']} {scope['path']}",
                                               context=parent, kind=trace.SpanKind.SERVER):
            await self.app(scope, receive, send)


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before it answers

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.record(scope, status, time.perf_counter() - started)

    @staticmethod
    def record(scope: Scope, status: int, duration: float) -> None:
        """The request's access line and metrics (also written by the lean path)."""
        path = scope["path"]
        fields: dict[str, Any] = {
            "method": scope["method"], "path": path, "status": status,
            "duration_ms": round(duration * 1000, 3),
        }
        state = scope.get("state", {})
        gateway = state.get("gateway")
        aborted = state.get(ABORTED)
        admit = False  # whether a new operation or client name may become a label
        limit = 0  # client names
        if gateway is not None:
            context = gateway[0]
            admit = context.names_admitted
            limit = context.settings.client_names_max
            fields["operation"] = context.operation_name
            fields["outcome"] = context.outcome
            fields["upstream_calls"] = context.scope.calls
            if context.batch is not None:
                # One request, several operations: each with its outcome in the line, the
                # request counted under BATCH (no GraphQL name has brackets).
                fields["operation"] = BATCH
                fields["operations"] = [{"operation": name, "outcome": outcome}
                                        for name, outcome in context.batch]
        if aborted is not None:
            # Left before its request was read (app.http.transport): not the gateway's
            # failure. 408 when it was too slow, else nginx's 499 (client closed request).
            fields["status"] = status = 408 if aborted == "body_timeout" else 499
            fields["outcome"] = "aborted"
        if path == GRAPHQL_PATH and (gateway is not None or status >= 400):
            # (Without a context and with a 2xx, it was the IDE's page, not a request.)
            outcome = fields.get("outcome") or ("refused" if status < 500 else "error")
            operation = metrics.operation_label(fields.get("operation"), admit=admit)
            metrics.flush_gc()
            child(metrics.REQUESTS, operation, outcome).inc()
            trace_id = metrics.sampled_trace_id()
            metrics.timed(metrics.REQUEST_LATENCY, operation, outcome).observe(duration, trace_id)
            headers = Headers(scope=scope)
            client, version = metrics.client_labels(
                headers.get(CLIENT_NAME), headers.get(CLIENT_VERSION), admit=admit,
                limit=limit)
            child(metrics.CLIENT_REQUESTS, client, version, outcome).inc()
            metrics.timed(metrics.CLIENT_LATENCY, client).observe(duration, trace_id)
            metrics.SLI_DURATION.labels(*_sli_labels(gateway, outcome)).observe(duration)
            access_log.info("request", extra=fields)
        else:
            access_log.debug("request", extra=fields)


def _sli_labels(gateway: Any, outcome: str) -> tuple[str, str]:
    """The SLO's labels of a request: its operation type, and whose fault its errors are."""
    context = gateway[0] if gateway is not None else None
    kind = "unknown"
    if context is not None:
        if context.batch is not None:
            kind = "batch"
        elif context.document is not None:
            operation = get_operation_ast(context.document, context.operation_name)
            if operation is not None:
                kind = operation.operation.value
    if outcome in ("refused", "aborted"):
        return kind, "client"  # never ran, or left: the client's own doing
    if outcome == "ok":
        return kind, "none"
    codes = context.error_codes if context is not None else frozenset()
    # An error without codes (no context: failed before GraphQL ran) is the gateway's.
    return kind, fault(codes) if codes else "server"


def server_span(telemetry: Telemetry) -> Middleware:
    """The middleware that starts a request's server span (see the module)."""
    if telemetry.exporting:
        return Middleware(OpenTelemetryMiddleware, excluded_urls=UNTRACED_PATHS,
                          tracer_provider=telemetry.provider,
                          # No internal span per ASGI message: they would double a
                          # request's spans.
                          exclude_spans=["receive", "send"])
    return Middleware(ServerSpan, tracer=telemetry.tracer)


def traced(app: ASGIApp, telemetry: Telemetry) -> ASGIApp:
    """`app` inside the request's server span (what the lean path uses)."""
    cls, args, kwargs = server_span(telemetry)
    return cast("ASGIApp", cls(app, *args, **kwargs))


def middleware(settings: Settings, telemetry: Telemetry, auth: Authenticator
               ) -> list[Middleware]:
    """The request-level telemetry, outermost first (for Starlette's `middleware=`)."""
    return [
        Middleware(DebugRecording, settings=settings, auth=auth),
        server_span(telemetry),
        Middleware(AccessLog),
    ]
