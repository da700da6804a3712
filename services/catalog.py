"""catalog: products and categories; listing by category with cursors, top-rated, PATCH."""

from __future__ import annotations

import bisect
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.context import Context
from services.http import (
    START,
    JSONResponse,
    bad_input,
    decode_cursor,
    encode_cursor,
    is_int,
    not_found,
    query_ids,
    query_int,
    read_object,
)
from services.seed import id_num, now_iso
from services.store import Change

BATCH_LIMIT = 100
MAX_FIRST = 100


def _check_patch(body: dict[str, Any]) -> None:
    checks = {
        "name": lambda v: isinstance(v, str) and bool(v.strip()),
        "description": lambda v: isinstance(v, str),
        "price_cents": lambda v: is_int(v) and v >= 0,
        "rating_avg": lambda v: (is_int(v) or isinstance(v, float)) and 0 <= v <= 5,
        "rating_count": lambda v: is_int(v) and v >= 0,
    }
    if not body:
        raise bad_input(f"nothing to change; allowed fields: {', '.join(checks)}")
    for key, value in body.items():
        if key not in checks:
            raise bad_input(f"unknown or read-only field {key!r}")
        if not checks[key](value):
            raise bad_input(f"invalid value for {key}: {value!r}")


class Catalog:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.products = ctx.dataset.products
        self.products.update(ctx.store.stored("Product"))
        self.categories = ctx.dataset.categories
        # Products are never created or deleted, so the listing indexes are fixed at start:
        # (numeric ids, ids) in catalog order, overall and per category.
        ordered = sorted(self.products, key=id_num)
        self.all_index = ([id_num(p) for p in ordered], ordered)
        by_cat: dict[str, list[str]] = {}
        for pid in ordered:
            by_cat.setdefault(self.products[pid]["category_id"], []).append(pid)
        self.by_category = {c: ([id_num(p) for p in ids], ids) for c, ids in by_cat.items()}
        self._top: list[str] | None = None  # rebuilt lazily after a rating change

    def top(self) -> list[str]:
        # Best rating_avg first; ties by numeric id ascending.
        if self._top is None:
            self._top = sorted(
                self.products,
                key=lambda p: (-self.products[p]["rating_avg"], id_num(p)))
        return self._top

    async def list_products(self, request: Request) -> Response:
        params = request.query_params
        if "ids" in params:  # a batch read; other parameters do not apply
            ids = query_ids(request, "ids", BATCH_LIMIT)
            products = self.products
            return JSONResponse({"items": [products[i] for i in ids if i in products]})
        first = query_int(request, "first", 20, 0, MAX_FIRST)
        category = params.get("category_id")
        sort = params.get("sort")
        if sort is not None:
            if sort != "top":
                raise bad_input("sort must be 'top'")
            if "after" in params:
                raise bad_input("sort=top has a single page; 'after' is not accepted")
            ranked = self.top()
            if category is not None:
                ranked = [p for p in ranked if self.products[p]["category_id"] == category]
            return JSONResponse({"items": [self.products[p] for p in ranked[:first]],
                                 "next_cursor": None})
        nums, ids = self.by_category.get(category, ([], [])) if category else self.all_index
        start = 0
        after = params.get("after")
        if after is not None:
            payload = decode_cursor(after)
            if payload != START:
                n = id_num(payload)
                if not payload.startswith("p") or n < 0:
                    raise bad_input("invalid cursor")
                start = bisect.bisect_right(nums, n)
        page = ids[start:start + first]
        more = start + first < len(ids)
        next_cursor = None
        if more:
            next_cursor = encode_cursor(page[-1]) if page else (after or encode_cursor(START))
        return JSONResponse({"items": [self.products[p] for p in page],
                             "next_cursor": next_cursor})

    async def patch_product(self, request: Request) -> Response:
        pid = request.path_params["id"]
        body = await read_object(request)
        product = self.products.get(pid)
        if product is None:
            raise not_found(f"product {pid} not found")
        _check_patch(body)
        if "rating_avg" in body:
            body["rating_avg"] = round(float(body["rating_avg"]), 2)
        # Copy on write: a response being serialised never sees a half-applied change.
        updated = {**product, **body, "updated_at": now_iso()}
        (version,) = self.ctx.store.commit([Change("Product", pid, updated)])
        self.products[pid] = updated
        if "rating_avg" in body:
            self._top = None
        self.ctx.emitter.emit("Product", pid, "update", version)
        return JSONResponse(updated)

    async def list_categories(self, request: Request) -> Response:
        if "ids" in request.query_params:
            ids = query_ids(request, "ids", BATCH_LIMIT)
            cats = self.categories
            return JSONResponse({"items": [cats[c] for c in ids if c in cats]})
        return JSONResponse({"items": list(self.categories.values())})


def routes(ctx: Context) -> list[Route]:
    catalog = Catalog(ctx)
    return [
        Route("/products", catalog.list_products, methods=["GET"]),
        Route("/products/{id}", catalog.patch_product, methods=["PATCH"]),
        Route("/categories", catalog.list_categories, methods=["GET"]),
    ]
