"""recommendations: a slow, deterministic list of product ids per user; about one id in ten
names a product that does not exist (as a real, eventually consistent service would)."""

from __future__ import annotations

import asyncio
import random
from functools import lru_cache

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.context import Context
from services.http import JSONResponse, not_found, query_int
from services.seed import now_iso

MAX_LIMIT = 50
GHOST_BASE = 999_000  # ids from here on are far beyond the seeded products


def routes(ctx: Context) -> list[Route]:
    seed = ctx.dataset.seed
    users = ctx.dataset.users
    product_ids = sorted(ctx.dataset.products, key=lambda p: int(p[1:]))
    ghost_base = max(GHOST_BASE, 10 * len(product_ids))
    latency_s = ctx.config.recommendations_latency_ms / 1000

    @lru_cache(maxsize=4096)
    def recommend(user_id: str) -> tuple[str, ...]:
        # A string seed is hashed with SHA-512 by random, so this is stable across processes.
        rng = random.Random(f"{seed}:{user_id}")
        picks: list[str] = []
        while len(picks) < min(MAX_LIMIT, len(product_ids) + 5):
            pid = (f"p{ghost_base + rng.randrange(1, 1000)}" if rng.random() < 0.1
                   else rng.choice(product_ids))
            if pid not in picks:
                picks.append(pid)
        return tuple(picks)

    async def get_recommendations(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        limit = query_int(request, "limit", 10, 1, MAX_LIMIT)
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        if user_id not in users:
            raise not_found(f"user {user_id} not found")
        return JSONResponse({"product_ids": list(recommend(user_id)[:limit]),
                             "generated_at": now_iso()})

    return [Route("/recommendations/{user_id}", get_recommendations, methods=["GET"])]
