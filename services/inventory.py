"""inventory: stock per sku, batch query by POST body, all-or-nothing idempotent reservations,
restocking by the warehouse.

``POST /inventory/reservations/{reservation_id}/release`` is an extension of the contract used
by the orders service's cancel; releasing twice is a no-op.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.context import Context
from services.http import (
    ApiError,
    JSONResponse,
    bad_input,
    check_id_list,
    is_int,
    not_found,
    read_object,
)
from services.seed import now_iso
from services.store import Change

BATCH_LIMIT = 200
MAX_RESERVATION_ITEMS = 200
IDEMPOTENCY_SCOPE = "reservations"


def body_hash(body: Any) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Inventory:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.stock = ctx.dataset.stock
        self.stock.update(self.store.stored("Stock"))
        self.reservations: dict[str, dict[str, Any]] = self.store.stored("Reservation")

    async def query(self, request: Request) -> Response:
        body = await read_object(request)
        skus = check_id_list(request.scope, body.get("skus"), "skus", BATCH_LIMIT)
        stock = self.stock
        return JSONResponse({"items": [stock[s] for s in skus if s in stock]})

    def _parse_reservation(self, body: dict[str, Any]) -> tuple[str, dict[str, int]]:
        order_id = body.get("order_id")
        items = body.get("items")
        if not isinstance(order_id, str) or not order_id:
            raise bad_input("order_id must be a non-empty string")
        if not isinstance(items, list) or not items or len(items) > MAX_RESERVATION_ITEMS:
            raise bad_input(f"items must be a list of 1 to {MAX_RESERVATION_ITEMS} entries")
        wanted: dict[str, int] = {}  # a sku listed twice reserves the sum
        for item in items:
            if not isinstance(item, dict):
                raise bad_input("each item must be an object with sku and quantity")
            sku, quantity = item.get("sku"), item.get("quantity")
            if not isinstance(sku, str) or sku not in self.stock:
                raise bad_input(f"unknown sku {sku!r}")
            if not is_int(quantity) or quantity < 1:
                raise bad_input(f"quantity for {sku} must be an integer >= 1")
            wanted[sku] = wanted.get(sku, 0) + quantity
        return order_id, wanted

    async def reserve(self, request: Request) -> Response:
        key = request.headers.get("idempotency-key")
        if not key:
            raise bad_input("the Idempotency-Key header is required")
        body = await read_object(request)
        order_id, wanted = self._parse_reservation(body)
        digest = body_hash(body)
        # No await between the checks and the commit: the check-and-decrement is atomic.
        record = self.store.idempotency(IDEMPOTENCY_SCOPE, key)
        if record is not None:
            if record["hash"] != digest:
                raise ApiError(409, "IDEMPOTENCY_CONFLICT",
                               "Idempotency-Key reused with a different body")
            return JSONResponse({"reservation_id": record["reservation_id"]}, 201)
        short = [s for s, q in wanted.items() if self.stock[s]["quantity"] < q]
        if short:
            raise ApiError(409, "INSUFFICIENT_STOCK", f"not enough stock for {', '.join(short)}")
        number = self.store.counter("reservation", 0) + 1
        reservation_id = f"res{number}"
        reservation = {"id": reservation_id, "order_id": order_id,
                       "items": [{"sku": s, "quantity": q} for s, q in wanted.items()],
                       "released": False}
        changes = self._adjust(wanted, -1)
        changes.append(Change("Reservation", reservation_id, reservation, created=True))
        versions = self.store.commit(
            changes,
            idempotency=[(IDEMPOTENCY_SCOPE, key,
                          {"hash": digest, "reservation_id": reservation_id})],
            counters={"reservation": number},
        )
        self._apply(changes, versions)
        return JSONResponse({"reservation_id": reservation_id}, 201)

    async def release(self, request: Request) -> Response:
        reservation_id = request.path_params["reservation_id"]
        reservation = self.reservations.get(reservation_id)
        if reservation is None:
            raise not_found(f"reservation {reservation_id} not found")
        if not reservation["released"]:
            wanted = {it["sku"]: it["quantity"] for it in reservation["items"]}
            changes = self._adjust(wanted, +1)
            reservation = {**reservation, "released": True}
            changes.append(Change("Reservation", reservation_id, reservation))
            versions = self.store.commit(changes)
            self._apply(changes, versions)
        return JSONResponse({"reservation_id": reservation_id, "released": True})

    async def restock(self, request: Request) -> Response:
        sku = request.path_params["sku"]
        if sku not in self.stock:
            raise not_found(f"sku {sku} not found")
        body = await read_object(request)
        quantity = body.get("quantity")
        if set(body) != {"quantity"} or not is_int(quantity) or quantity < 1:
            raise bad_input("the body must be {\"quantity\": n} with an integer n >= 1")
        changes = self._adjust({sku: quantity}, +1)
        self._apply(changes, self.store.commit(changes))
        return JSONResponse(self.stock[sku])

    def _adjust(self, quantities: dict[str, int], sign: int) -> list[Change]:
        at = now_iso()
        changes = []
        for sku, qty in quantities.items():
            quantity = self.stock[sku]["quantity"] + sign * qty
            doc = {**self.stock[sku], "quantity": quantity, "in_stock": quantity > 0,
                   "updated_at": at}
            changes.append(Change("Stock", sku, doc))
        return changes

    def _apply(self, changes: list[Change], versions: list[int]) -> None:
        """After the commit: update memory, then emit a Stock event per sku changed."""
        for change, version in zip(changes, versions, strict=True):
            if change.type == "Stock":
                self.stock[change.id] = change.doc
                self.ctx.emitter.emit("Stock", change.id, "update", version)
            else:
                self.reservations[change.id] = change.doc


def routes(ctx: Context) -> list[Route]:
    inventory = Inventory(ctx)
    return [
        Route("/inventory/query", inventory.query, methods=["POST"]),
        Route("/inventory/reservations", inventory.reserve, methods=["POST"]),
        Route("/inventory/reservations/{reservation_id}/release", inventory.release,
              methods=["POST"]),
        Route("/inventory/{sku}/restock", inventory.restock, methods=["POST"]),
    ]
