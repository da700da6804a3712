"""orders: batch reads, per-user listing newest first, idempotent placement, cancel, and
shipping (by the warehouse's systems).

Placing an order reads prices and skus from catalog and reserves stock through inventory, both
over HTTP, under a lock per Idempotency-Key so concurrent retries make exactly one order.
"""

from __future__ import annotations

import bisect
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.context import Context
from services.http import (
    START,
    ApiError,
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
from services.inventory import body_hash
from services.seed import id_num, now_iso
from services.store import Change

BATCH_LIMIT = 100
MAX_FIRST = 100
MAX_ITEMS = 100
IDEMPOTENCY_SCOPE = "orders"
RESERVATION_SCOPE = "order-reservation"  # order id -> reservation id (not part of Order)

SortKey = tuple[str, int]  # (created_at, numeric id): newest first is this key descending


class Orders:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.orders = ctx.dataset.orders
        self.orders.update(ctx.store.stored("Order"))
        self.user_ids = ctx.dataset.users  # users are never created, so the seed is enough
        self.catalog = ctx.upstream("catalog")
        self.inventory = ctx.upstream("inventory")
        self.by_user: dict[str, list[SortKey]] = {}  # ascending; read backwards
        for order in self.orders.values():
            self.by_user.setdefault(order["user_id"], []).append(self._key(order))
        for keys in self.by_user.values():
            keys.sort()
        self.next_number = ctx.store.counter(
            "order", max((id_num(o) for o in self.orders), default=0))

    @staticmethod
    def _key(order: dict[str, Any]) -> SortKey:
        return (order["created_at"], id_num(order["id"]))

    async def list_orders(self, request: Request) -> Response:
        params = request.query_params
        if ("ids" in params) == ("user_id" in params):
            raise bad_input("give exactly one of ids or user_id")
        if "ids" in params:
            ids = query_ids(request, "ids", BATCH_LIMIT)
            orders = self.orders
            return JSONResponse({"items": [orders[i] for i in ids if i in orders]})
        first = query_int(request, "first", 10, 0, MAX_FIRST)
        keys = self.by_user.get(params["user_id"], [])
        end = len(keys)
        after = params.get("after")
        if after is not None:
            end = bisect.bisect_left(keys, self._decode(after))
        start = max(0, end - first)
        page = [self.orders[f"o{n}"] for _, n in reversed(keys[start:end])]
        next_cursor = None
        if start > 0:  # older orders remain
            if page:
                next_cursor = encode_cursor(f"{page[-1]['created_at']}|{page[-1]['id']}")
            else:
                next_cursor = after or encode_cursor(START)
        return JSONResponse({"items": page, "next_cursor": next_cursor})

    @staticmethod
    def _decode(cursor: str) -> SortKey:
        payload = decode_cursor(cursor)
        if payload == START:
            return ("\uffff", 0)  # sorts after every real key
        created_at, _, order_id = payload.partition("|")
        n = id_num(order_id)
        if not created_at or not order_id.startswith("o") or n < 0:
            raise bad_input("invalid cursor")
        return (created_at, n)

    def _parse(self, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        user_id, items = body.get("user_id"), body.get("items")
        if not isinstance(user_id, str) or not user_id:
            raise bad_input("user_id must be a non-empty string")
        if user_id not in self.user_ids:
            raise bad_input(f"unknown user {user_id}")
        if not isinstance(items, list) or not items or len(items) > MAX_ITEMS:
            raise bad_input(f"items must be a list of 1 to {MAX_ITEMS} entries")
        clean = []
        for item in items:
            if not isinstance(item, dict):
                raise bad_input("each item must be an object with product_id and quantity")
            product_id, quantity = item.get("product_id"), item.get("quantity")
            if not isinstance(product_id, str) or not product_id or "," in product_id:
                raise bad_input("product_id must be a non-empty string without commas")
            if not is_int(quantity) or quantity < 1:
                raise bad_input(f"quantity for {product_id} must be an integer >= 1")
            clean.append({"product_id": product_id, "quantity": quantity})
        return user_id, clean

    async def place(self, request: Request) -> Response:
        key = request.headers.get("idempotency-key")
        if not key:
            raise bad_input("the Idempotency-Key header is required")
        body = await read_object(request)
        user_id, items = self._parse(body)
        digest = body_hash({"user_id": user_id, "items": items})
        async with self.ctx.lock(f"place:{key}"):
            record = self.store.idempotency(IDEMPOTENCY_SCOPE, key)
            if record is not None:
                if record["hash"] != digest:
                    raise ApiError(409, "IDEMPOTENCY_CONFLICT",
                                   "Idempotency-Key reused with a different body")
                return JSONResponse(self.orders[record["order_id"]], 200)
            return await self._create(request, key, digest, user_id, items)

    async def _create(self, request: Request, key: str, digest: str, user_id: str,
                      items: list[dict[str, Any]]) -> Response:
        product_ids = list(dict.fromkeys(it["product_id"] for it in items))
        status, found = await self.catalog.call(
            "GET", "/products?ids=" + ",".join(quote(p, safe="") for p in product_ids), request)
        if status != 200:
            raise self.catalog.unavailable(status, found)
        products = {p["id"]: p for p in found["items"]}
        missing = [p for p in product_ids if p not in products]
        if missing:
            raise bad_input(f"unknown product {', '.join(missing)}")
        self.next_number += 1  # a number burnt by a failed reservation is simply skipped
        number = self.next_number
        order_id = f"o{number}"
        lines = [{"product_id": it["product_id"], "sku": products[it["product_id"]]["sku"],
                  "quantity": it["quantity"],
                  "unit_price_cents": products[it["product_id"]]["price_cents"]}
                 for it in items]
        status, reply = await self.inventory.call(
            "POST", "/inventory/reservations", request,
            body={"order_id": order_id,
                  "items": [{"sku": ln["sku"], "quantity": ln["quantity"]} for ln in lines]},
            headers={"Idempotency-Key": f"order:{key}"},
        )
        if status == 409 and isinstance(reply, dict):
            error = reply.get("error", {})
            raise ApiError(409, error.get("code", "CONFLICT"), error.get("message", "conflict"))
        if status != 201:
            raise self.inventory.unavailable(status, reply)
        order = {
            "id": order_id, "user_id": user_id, "status": "PLACED", "items": lines,
            "total_cents": sum(ln["quantity"] * ln["unit_price_cents"] for ln in lines),
            "currency": "USD", "created_at": now_iso(),
        }
        (version,) = self.store.commit(
            [Change("Order", order_id, order, created=True)],
            idempotency=[(IDEMPOTENCY_SCOPE, key, {"hash": digest, "order_id": order_id}),
                         (RESERVATION_SCOPE, order_id, reply["reservation_id"])],
            counters={"order": number},
        )
        self.orders[order_id] = order
        bisect.insort(self.by_user.setdefault(user_id, []), self._key(order))
        self.ctx.emitter.emit("Order", order_id, "create", version)
        return JSONResponse(order, 201)

    async def cancel(self, request: Request) -> Response:
        order_id = request.path_params["id"]
        async with self.ctx.lock(f"order:{order_id}"):
            order = self.orders.get(order_id)
            if order is None:
                raise not_found(f"order {order_id} not found")
            if order["status"] == "CANCELLED":
                return JSONResponse(order)
            if order["status"] == "SHIPPED":
                raise ApiError(409, "ALREADY_SHIPPED", f"order {order_id} has already shipped")
            # Seeded orders have no reservation to release.
            reservation_id = self.store.idempotency(RESERVATION_SCOPE, order_id)
            if reservation_id is not None:
                status, reply = await self.inventory.call(
                    "POST", f"/inventory/reservations/{reservation_id}/release", request)
                if status != 200:
                    raise self.inventory.unavailable(status, reply)
            updated = {**order, "status": "CANCELLED"}
            (version,) = self.store.commit([Change("Order", order_id, updated)])
            self.orders[order_id] = updated
            self.ctx.emitter.emit("Order", order_id, "update", version)
            return JSONResponse(updated)

    async def ship(self, request: Request) -> Response:
        """The warehouse has sent the order: SHIPPED (its reserved stock stays taken).
        Shipping a shipped order returns it; a cancelled one cannot ship (409)."""
        order_id = request.path_params["id"]
        async with self.ctx.lock(f"order:{order_id}"):
            order = self.orders.get(order_id)
            if order is None:
                raise not_found(f"order {order_id} not found")
            if order["status"] == "SHIPPED":
                return JSONResponse(order)
            if order["status"] == "CANCELLED":
                raise ApiError(409, "ALREADY_CANCELLED", f"order {order_id} was cancelled")
            updated = {**order, "status": "SHIPPED"}
            (version,) = self.store.commit([Change("Order", order_id, updated)])
            self.orders[order_id] = updated
            self.ctx.emitter.emit("Order", order_id, "update", version)
            return JSONResponse(updated)


def routes(ctx: Context) -> list[Route]:
    orders = Orders(ctx)
    return [
        Route("/orders", orders.list_orders, methods=["GET"]),
        Route("/orders", orders.place, methods=["POST"]),
        Route("/orders/{id}/cancel", orders.cancel, methods=["POST"]),
        Route("/orders/{id}/ship", orders.ship, methods=["POST"]),
    ]
