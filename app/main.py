"""The ASGI application: routes, and the resources that live as long as the process."""

from __future__ import annotations

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


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    client = UpstreamClient(settings)
    graphql = GatewayGraphQL(build_schema(), settings, client)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await client.start()
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
