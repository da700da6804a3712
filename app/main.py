"""The ASGI application: routes, and the resources that live as long as the process."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.events import receive_event
from app.graphql_view import GatewayGraphQL
from app.settings import Settings
from app.upstream import UpstreamClient
from schema import build_schema

log = logging.getLogger("gateway")
GC_THRESHOLD = 50_000


def tune_gc() -> None:
    # A deep query allocates thousands of short-lived objects; with the default gen-0
    # threshold (700) the collector runs many times per request and re-walks the long-lived
    # schema each time. Freezing the start-up heap and collecting less often cut CPU per deep
    # query at concurrency 32 (bench/RESULTS.md).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 50)


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    client = UpstreamClient(settings)
    graphql = GatewayGraphQL(build_schema(), settings, client)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await client.start()
        tune_gc()
        if settings.dev_mode:
            log.warning("DEVELOPMENT MODE: the X-User-Id header is trusted as the acting user")
        try:
            yield
        finally:
            await client.close()

    app = Starlette(
        routes=[
            # Route, not Mount: a Mount answers /graphql with a redirect to /graphql/.
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route("/healthz", healthz),
            Route("/events", receive_event, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.client = client
    app.state.events_received = 0
    return app
