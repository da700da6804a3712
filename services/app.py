"""Assemble one service: its routes, the shared hooks, error handlers and the middleware."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp

from services import auth, catalog, inventory, orders, recommendations, reviews, users
from services.context import Context
from services.http import EXCEPTION_HANDLERS
from services.middleware import Control, ControlMiddleware, hook_routes

ROUTES: dict[str, Callable[[Context], list[Route]]] = {
    "users": users.routes,
    "catalog": catalog.routes,
    "inventory": inventory.routes,
    "orders": orders.routes,
    "reviews": reviews.routes,
    "recommendations": recommendations.routes,
    "auth": auth.routes,
}


def build(ctx: Context, stopping: asyncio.Event) -> tuple[ASGIApp, Control]:
    control = Control(ctx.config.faults[ctx.name], stopping)
    service_routes = ROUTES[ctx.name](ctx)
    app = Starlette(routes=[*hook_routes(control), *service_routes],
                    exception_handlers=EXCEPTION_HANDLERS)
    app.router.redirect_slashes = False  # "/users/" is an unknown route (404), not a 307
    return traced(ControlMiddleware(app, service_routes, control), ctx.name), control


def traced(app: ASGIApp, name: str) -> ASGIApp:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, the service continues the gateway's traces: a
    server span per request, the child of the gateway's call (from `traceparent`), exported
    under the service's own name. Without it, nothing is added."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return app
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return OpenTelemetryMiddleware(app, tracer_provider=provider, exclude_spans=["receive", "send"],
                                   excluded_urls="/healthz,/_stats,/_faults")
