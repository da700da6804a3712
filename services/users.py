"""users: read-only people, by id or in batches of at most 100."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.context import Context
from services.http import JSONResponse, not_found, query_ids

BATCH_LIMIT = 100


def routes(ctx: Context) -> list[Route]:
    users = ctx.dataset.users

    async def list_users(request: Request) -> Response:
        ids = query_ids(request, "ids", BATCH_LIMIT)
        return JSONResponse({"items": [users[i] for i in ids if i in users]})

    async def get_user(request: Request) -> Response:
        user = users.get(request.path_params["id"])
        if user is None:
            raise not_found(f"user {request.path_params['id']} not found")
        return JSONResponse(user)

    return [
        Route("/users", list_users, methods=["GET"]),
        Route("/users/{id}", get_user, methods=["GET"]),
    ]
