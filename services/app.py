"""Assemble one service: its routes, the shared hooks, error handlers and the middleware."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp

from services import catalog, inventory, orders, recommendations, reviews, users
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
}


def build(ctx: Context, stopping: asyncio.Event) -> tuple[ASGIApp, Control]:
    control = Control(ctx.config.faults[ctx.name], stopping)
    service_routes = ROUTES[ctx.name](ctx)
    app = Starlette(routes=[*hook_routes(control), *service_routes],
                    exception_handlers=EXCEPTION_HANDLERS)
    app.router.redirect_slashes = False  # "/users/" is an unknown route (404), not a 307
    return ControlMiddleware(app, service_routes, control), control
