"""reviews: reads by product, author or id; POST checks product and author over HTTP, then
updates the product's rating aggregate in the catalog."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.context import Context
from services.http import (
    JSONResponse,
    bad_input,
    is_int,
    query_ids,
    read_object,
)
from services.seed import id_num, now_iso
from services.store import Change

log = logging.getLogger("services.reviews")

BATCH_LIMIT = 100
KEYS = ("product_ids", "author_ids", "ids")


class Reviews:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.reviews = ctx.dataset.reviews
        self.reviews.update(ctx.store.stored("Review"))
        self.catalog = ctx.upstream("catalog")
        self.users = ctx.upstream("users")
        # Review ids per product and per author, newest first (created_at, then id).
        self.by_product: dict[str, list[str]] = {}
        self.by_author: dict[str, list[str]] = {}
        ordered = sorted(self.reviews.values(), key=lambda r: (r["created_at"], id_num(r["id"])),
                         reverse=True)
        for review in ordered:
            self.by_product.setdefault(review["product_id"], []).append(review["id"])
            self.by_author.setdefault(review["author_id"], []).append(review["id"])
        self.next_number = ctx.store.counter(
            "review", max((id_num(r) for r in self.reviews), default=0))

    async def list_reviews(self, request: Request) -> Response:
        given = [k for k in KEYS if k in request.query_params]
        if len(given) != 1:
            raise bad_input("give exactly one of product_ids, author_ids or ids")
        ids = query_ids(request, given[0], BATCH_LIMIT)
        reviews = self.reviews
        if given[0] == "ids":
            items = [reviews[i] for i in ids if i in reviews]
        else:
            index = self.by_product if given[0] == "product_ids" else self.by_author
            items = [reviews[r] for key in ids for r in index.get(key, ())]
        return JSONResponse({"items": items})

    async def create(self, request: Request) -> Response:
        body = await read_object(request)
        product_id, author_id = body.get("product_id"), body.get("author_id")
        rating, text = body.get("rating"), body.get("body")
        if not isinstance(product_id, str) or not product_id:
            raise bad_input("product_id must be a non-empty string")
        if not isinstance(author_id, str) or not author_id:
            raise bad_input("author_id must be a non-empty string")
        if not is_int(rating) or not 1 <= rating <= 5:
            raise bad_input("rating must be an integer from 1 to 5")
        if not isinstance(text, str) or not text.strip():
            raise bad_input("body must be a non-empty string")
        extra = set(body) - {"product_id", "author_id", "rating", "body"}
        if extra:
            raise bad_input(f"unknown fields: {', '.join(sorted(extra))}")
        (p_status, p_body), (u_status, u_body) = await asyncio.gather(
            self.catalog.call("GET", f"/products?ids={quote(product_id, safe='')}", request),
            self.users.call("GET", f"/users/{quote(author_id, safe='')}", request),
        )
        if p_status not in (200, 400):
            raise self.catalog.unavailable(p_status, p_body)
        if p_status == 400 or not any(p["id"] == product_id for p in p_body["items"]):
            raise bad_input(f"unknown product {product_id}")
        if u_status == 404:
            raise bad_input(f"unknown author {author_id}")
        if u_status != 200:
            raise self.users.unavailable(u_status, u_body)

        self.next_number += 1
        number = self.next_number
        review: dict[str, Any] = {
            "id": f"r{number}", "product_id": product_id, "author_id": author_id,
            "rating": rating, "body": text, "created_at": now_iso()}
        (version,) = self.store.commit([Change("Review", review["id"], review, created=True)],
                                       counters={"review": number})
        self.reviews[review["id"]] = review
        # The newest review goes first (its created_at and id are the largest so far).
        self.by_product.setdefault(product_id, []).insert(0, review["id"])
        self.by_author.setdefault(author_id, []).insert(0, review["id"])
        self.ctx.emitter.emit("Review", review["id"], "create", version)
        await self._update_rating(request, product_id)
        return JSONResponse(review, 201)

    async def _update_rating(self, request: Request, product_id: str) -> None:
        # One PATCH at a time per product, each computed when it is sent, so the last PATCH
        # the catalog applies carries the aggregate of every committed review.
        async with self.ctx.lock(f"rating:{product_id}"):
            ratings = [self.reviews[r]["rating"] for r in self.by_product.get(product_id, ())]
            patch: dict[str, Any] = {
                "rating_avg": round(sum(ratings) / len(ratings), 2) if ratings else 0.0,
                "rating_count": len(ratings)}
            try:
                status, reply = await self.catalog.call(
                    "PATCH", f"/products/{quote(product_id, safe='')}", request, body=patch)
            except Exception as err:  # the review is committed; the aggregate catches up later
                status, reply = 503, repr(err)
            if status != 200:
                log.warning("rating update of %s failed: %s %s", product_id, status, reply)


def routes(ctx: Context) -> list[Route]:
    reviews = Reviews(ctx)
    return [
        Route("/reviews", reviews.list_reviews, methods=["GET"]),
        Route("/reviews", reviews.create, methods=["POST"]),
    ]
