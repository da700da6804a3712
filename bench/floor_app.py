"""The floors under the gateway's CPU per request: what no change to the gateway's own code
can go under, measured beside it by `python -m bench.speed --floor`.

uvicorn with the gateway's HTTP stack (httptools, uvloop, no access log) and an ASGI app with
no GraphQL, middleware, logging, metrics, tracing, timeouts, retries or cache:
- `{ __typename }`: it reads the body and answers the same bytes;
- the one-product query, the product page and the deep query: it decodes the request, makes
  the same upstream calls the gateway makes at best (one aiohttp session, one request per
  service per level, each body decoded with orjson), builds the answer's data by hand (only
  the selected fields) and encodes it. This is the least a Python gateway on aiohttp does for
  those queries; the gateway's CPU over it is what GraphQL, the request's policies and the
  telemetry cost.

The upstream URLs come from the gateway's settings' variables (CATALOG_URL, ...).
FLOOR_CLIENT=reqwest makes the calls with pyreqwest (Rust's reqwest; the bench extra) in
place of aiohttp: the floor of a Python gateway on a Rust-backed client.

FLOOR_GRAPHQL=true answers `{ __typename }` as the least GraphQL server with the gateway's
telemetry would: the request decoded, the document from a dict of parsed documents,
graphql-core's `execute` on the gateway's schema, one JSON access line (the gateway's
formatter) and the two request metrics (a counter and a latency histogram), the answer
encoded.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from typing import Any

import aiohttp
import orjson

BODY = b'{"data":{"__typename":"Query"}}'


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


HEADERS = _headers(BODY)

_session: aiohttp.ClientSession | None = None
_reqwest: Any = None
REQWEST = os.environ.get("FLOOR_CLIENT") == "reqwest"


def _url(service: str) -> str:
    return os.environ.get(f"{service.upper()}_URL", "")


def session() -> aiohttp.ClientSession:
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=600, limit_per_host=100),
            skip_auto_headers=("User-Agent",))
    return _session


def reqwest() -> Any:
    global _reqwest
    if _reqwest is None:
        from pyreqwest.client import ClientBuilder
        _reqwest = ClientBuilder().max_connections(600).pool_max_idle_per_host(100).build()
    return _reqwest


async def get(service: str, path: str) -> Any:
    if REQWEST:
        response = await reqwest().get(_url(service) + path).build().send()
        return orjson.loads((await response.bytes()).to_bytes())
    async with session().get(_url(service) + path) as response:
        return orjson.loads(await response.read())


async def post(service: str, path: str, body: Any) -> Any:
    if REQWEST:
        response = await (reqwest().post(_url(service) + path)
                          .header("content-type", "application/json")
                          .body_bytes(orjson.dumps(body)).build().send())
        return orjson.loads((await response.bytes()).to_bytes())
    async with session().post(_url(service) + path, data=orjson.dumps(body),
                              headers={"content-type": "application/json"}) as response:
        return orjson.loads(await response.read())


def _ids(values: Any) -> str:
    return ",".join(dict.fromkeys(values))


def _newest(reviews: list[dict[str, Any]], by: str) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for review in reviews:
        grouped[review[by]].append(review)
    for items in grouped.values():
        items.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
    return grouped


async def product(variables: dict[str, Any]) -> Any:
    items = (await get("catalog", f"/products?ids={variables['id']}"))["items"]
    return {"product": {"id": items[0]["id"], "name": items[0]["name"]} if items else None}


async def product_page(variables: dict[str, Any]) -> Any:
    items = (await get("catalog", f"/products?ids={variables['id']}"))["items"]
    if not items:
        return {"product": None}
    p = items[0]
    stock, categories, reviews = await asyncio.gather(
        post("inventory", "/inventory/query", {"skus": [p["sku"]]}),
        get("catalog", f"/categories?ids={p['category_id']}"),
        get("reviews", f"/reviews?product_ids={p['id']}"))
    first = _newest(reviews["items"], "product_id").get(p["id"], [])[:10]
    users = {u["id"]: u for u in (await get(
        "users", f"/users?ids={_ids(r['author_id'] for r in first)}"))["items"]} \
        if first else {}
    s = stock["items"][0] if stock["items"] else None
    c = categories["items"][0] if categories["items"] else None
    return {"product": {
        "id": p["id"], "name": p["name"], "description": p["description"],
        "price": {"amount": p["price_cents"], "currency": p["currency"]},
        "weightGrams": p["weight_grams"],
        "inventory": s and {"quantity": s["quantity"], "inStock": s["in_stock"],
                            "warehouse": s["warehouse"]},
        "category": c and {"id": c["id"], "name": c["name"]},
        "averageRating": p["rating_avg"], "reviewCount": p["rating_count"],
        "reviews": [{"id": r["id"], "rating": r["rating"], "body": r["body"],
                     "createdAt": r["created_at"],
                     "author": _pick(users.get(r["author_id"]), "id", "name", "username")}
                    for r in first]}}


def _pick(item: dict[str, Any] | None, *fields: str) -> dict[str, Any] | None:
    return None if item is None else {f: item[f] for f in fields}


async def deep(variables: dict[str, Any]) -> Any:
    # As the gateway's loaders do, an id already fetched in this request is not asked for
    # again at a later level.
    top = (await get("catalog", "/products?sort=top&first=10"))["items"]
    stock, categories, reviews = await asyncio.gather(
        post("inventory", "/inventory/query", {"skus": [p["sku"] for p in top]}),
        get("catalog", f"/categories?ids={_ids(p['category_id'] for p in top)}"),
        get("reviews", f"/reviews?product_ids={_ids(p['id'] for p in top)}"))
    in_stock = {s["sku"]: s["in_stock"] for s in stock["items"]}
    category = {c["id"]: c for c in categories["items"]}
    by_product = _newest(reviews["items"], "product_id")
    first = {p["id"]: by_product.get(p["id"], [])[:5] for p in top}
    authors = _ids(r["author_id"] for rs in first.values() for r in rs)
    users = {u["id"]: u for u in (await get("users", f"/users?ids={authors}"))["items"]}
    by_author = _newest((await get("reviews", f"/reviews?author_ids={authors}"))["items"],
                        "author_id")
    theirs = {a: by_author.get(a, [])[:3] for a in users}
    products = {p["id"]: p for p in top}
    wanted = [r["product_id"] for rs in theirs.values() for r in rs]
    new = _ids(i for i in wanted if i not in products)
    if new:
        products.update((p["id"], p) for p in (await get(
            "catalog", f"/products?ids={new}"))["items"])
    ids = list(dict.fromkeys(i for i in wanted if i in products))
    skus = [products[i]["sku"] for i in ids if products[i]["sku"] not in in_stock]
    unread = _ids(i for i in ids if i not in by_product)
    stock2, reviews2 = await asyncio.gather(
        post("inventory", "/inventory/query", {"skus": skus}),
        get("reviews", f"/reviews?product_ids={unread}"))
    in_stock.update((s["sku"], s["in_stock"]) for s in stock2["items"])
    for pid, items in _newest(reviews2["items"], "product_id").items():
        by_product[pid] = items
    last = {i: by_product.get(i, [])[:2] for i in ids}
    users.update((u["id"], u) for u in (await get("users", "/users?ids=" + _ids(
        r["author_id"] for rs in last.values() for r in rs
        if r["author_id"] not in users)))["items"])

    def inner(pid: str) -> Any:
        p = products.get(pid)
        return p and {"id": p["id"], "name": p["name"], "inStock": in_stock.get(p["sku"]),
                      "reviews": [{"id": r["id"], "author": _pick(
                          users.get(r["author_id"]), "id", "name")} for r in last[pid]]}

    def author(aid: str) -> Any:
        u = users.get(aid)
        return u and {"id": u["id"], "username": u["username"], "reviews": [
            {"id": r["id"], "rating": r["rating"], "product": inner(r["product_id"])}
            for r in theirs[aid]]}

    return {"topProducts": [{
        "id": p["id"], "name": p["name"],
        "price": {"amount": p["price_cents"], "currency": p["currency"]},
        "inStock": in_stock.get(p["sku"]),
        "category": _pick(category.get(p["category_id"]), "id", "name"),
        "reviews": [{"id": r["id"], "rating": r["rating"], "body": r["body"],
                     "author": author(r["author_id"])} for r in first[p["id"]]]}
        for p in top]}


# By the operation's name (bench/queries, bench/workloads.py).
OPERATIONS = {b"query Product(": product, b"query ProductPage(": product_page,
              b"query Deep ": deep}


GRAPHQL = os.environ.get("FLOOR_GRAPHQL") == "true"
_minimal: Any = None


def minimal() -> Any:
    """(schema, documents, log, counter, histogram) of the FLOOR_GRAPHQL answer."""
    global _minimal
    if _minimal is None:
        import logging
        import sys

        from prometheus_client import Counter, Histogram

        from app.telemetry.logs import JsonFormatter
        from schema import build_schema
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        log = logging.getLogger("floor.access")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
        _minimal = (build_schema()._schema, {}, log,
                    Counter("floor_requests", "requests", ["operation", "outcome"]),
                    Histogram("floor_request_seconds", "latency", ["operation", "outcome"]))
    return _minimal


async def graphql_answer(raw: bytes, started: float) -> bytes:
    from graphql import experimental_execute_incrementally as execute
    from graphql import parse
    schema, documents, log, requests, latency = minimal()
    request = orjson.loads(raw)
    query = request["query"]
    document = documents.get(query)
    if document is None:
        document = documents[query] = parse(query)
    result = execute(schema, document, variable_values=request.get("variables"),
                     operation_name=request.get("operationName"))
    body = orjson.dumps({"data": result.data})  # type: ignore[union-attr]  # (synchronous)
    duration = time.perf_counter() - started
    requests.labels("anonymous", "ok").inc()
    latency.labels("anonymous", "ok").observe(duration)
    log.info("request", extra={"method": "POST", "path": "/graphql", "status": 200,
                               "duration_ms": round(duration * 1000, 3)})
    return body


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    started = time.perf_counter()
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    raw = b"".join(chunks)
    body, headers = BODY, HEADERS
    if GRAPHQL and b"__typename }" in raw:
        body = await graphql_answer(raw, started)
        headers = _headers(body)
    for marker, operation in OPERATIONS.items():
        if marker in raw:
            request = orjson.loads(raw)
            body = orjson.dumps({"data": await operation(request.get("variables") or {})})
            headers = _headers(body)
            break
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
