"""Persisted queries (Apollo's protocol, shared through Redis, and the persisted-only mode),
CORS, security headers, introspection by setting, and masked failures."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import Gateway
from tests.security.conftest import Answer, call

QUERY = '{ product(id: "p1") { id name } }'
DIGEST = hashlib.sha256(QUERY.encode()).hexdigest()


async def send(session: aiohttp.ClientSession, gateway: Gateway, body: dict[str, Any],
               method: str = "POST") -> Answer:
    from multidict import CIMultiDict

    if method == "GET":
        params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
        request = session.get(gateway.url + "/graphql", params=params,
                              headers={"Accept": "application/json"})
    else:
        request = session.post(gateway.url + "/graphql", json=body)
    async with request as resp:
        return Answer(resp.status, CIMultiDict(resp.headers), await resp.json())


def by_hash(digest: str = DIGEST) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


async def test_automatic_persisted_queries_register_once_and_are_shared_through_redis(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession, shared_redis_url: str
) -> None:
    # On one Redis and on a Redis Cluster.
    shared = {"REDIS_URL": shared_redis_url, "REDIS_PREFIX": f"apq-{uuid.uuid4().hex[:8]}"}
    a, b = start(**shared), start(**shared)
    miss = await send(http_session, a, {"extensions": by_hash()})
    assert miss.status == 200 and miss.codes() == ["PERSISTED_QUERY_NOT_FOUND"]
    registered = await send(http_session, a, {"query": QUERY, "extensions": by_hash()})
    assert registered.body["data"]["product"]["id"] == "p1"
    for gateway, method in ((a, "POST"), (b, "POST"), (b, "GET")):  # b learns it from Redis
        hit = await send(http_session, gateway, {"extensions": by_hash()}, method)
        assert hit.status == 200 and hit.body["data"]["product"]["name"], (gateway, method)
    wrong = await send(http_session, a, {"query": QUERY, "extensions": by_hash("0" * 64)})
    assert wrong.status == 400 and wrong.codes() == ["BAD_REQUEST"]
    bad = await send(http_session, a, {"extensions": {"persistedQuery": {"version": 2}}})
    assert bad.status == 400 and bad.codes() == ["BAD_REQUEST"]
    # Text that is not a valid operation is never registered.
    garbage = "this is not GraphQL"
    digest = hashlib.sha256(garbage.encode()).hexdigest()
    await send(http_session, a, {"query": garbage, "extensions": by_hash(digest)})
    again = await send(http_session, a, {"extensions": by_hash(digest)})
    assert again.codes() == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_persisted_only_mode_runs_only_the_manifests_operations(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"format": "apollo-persisted-query-manifest", "version": 1,
                                    "operations": [{"id": DIGEST, "body": QUERY,
                                                    "name": "Product"}]}))
    gateway = start(PERSISTED_QUERIES_FILE=str(manifest), PERSISTED_QUERIES_ONLY="true")
    ok = await send(http_session, gateway, {"extensions": by_hash()})
    assert ok.body["data"]["product"]["id"] == "p1"
    other = "{ categories { id } }"
    for body in ({"query": other},
                 {"query": other, "extensions": by_hash(hashlib.sha256(other.encode())
                                                        .hexdigest())}):
        refused = await send(http_session, gateway, body)
        assert refused.status == 400 and refused.codes() == ["PERSISTED_QUERY_REQUIRED"]
    unknown = await send(http_session, gateway, {"extensions": by_hash("a" * 64)})
    assert unknown.codes() == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_trusted_documents_exclude_what_automatic_persisted_queries_registered(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession, tmp_path: Path,
    shared_redis_url: str
) -> None:
    """PERSISTED_QUERIES_ONLY runs the manifest's operations, never one a client registered
    through APQ, even one shared through the same Redis; both manifest formats."""
    shared = {"REDIS_URL": shared_redis_url, "REDIS_PREFIX": f"td-{uuid.uuid4().hex[:8]}"}
    registered = "{ categories { id name } }"
    reg_hash = hashlib.sha256(registered.encode()).hexdigest()
    apq = start(**shared)
    first = await send(http_session, apq, {"query": registered, "extensions": by_hash(reg_hash)})
    assert first.body["data"]["categories"]
    assert (await send(http_session, apq, {"extensions": by_hash(reg_hash)})).body["data"]

    # Apollo's generate-persisted-query-manifest output, as written by @apollo/generate-
    # persisted-query-manifest 1.x.
    apollo = tmp_path / "persisted-query-manifest.json"
    apollo.write_text(json.dumps({
        "format": "apollo-persisted-query-manifest", "version": 1,
        "operations": [{"id": DIGEST, "name": "Product", "type": "query", "body": QUERY}]}))
    trusted = start(PERSISTED_QUERIES_FILE=str(apollo), PERSISTED_QUERIES_ONLY="true",
                    **shared)
    assert (await send(http_session, trusted, {"extensions": by_hash()})
            ).body["data"]["product"]["id"] == "p1"
    refused = await send(http_session, trusted, {"extensions": by_hash(reg_hash)})
    assert refused.codes() == ["PERSISTED_QUERY_NOT_FOUND"] and refused.body["data"] is None

    # The Guild's persisted-documents.json (GraphQL Code Generator's client preset, Hive):
    # id -> document, a sha1 id by default, sent as `documentId`.
    sha1 = hashlib.sha1(QUERY.encode()).hexdigest()
    guild = tmp_path / "persisted-documents.json"
    guild.write_text(json.dumps({sha1: QUERY, "app~1.2~categories": "{ categories { id } }"}))
    hive = start(PERSISTED_QUERIES_FILE=str(guild), PERSISTED_QUERIES_ONLY="true", **shared)
    for body in ({"documentId": sha1}, {"documentId": f"sha256:{DIGEST}"},
                 {"extensions": by_hash()}):
        ok = await send(http_session, hive, body)
        assert ok.body["data"]["product"]["id"] == "p1", body
    named = await send(http_session, hive, {"documentId": "app~1.2~categories"})
    assert named.body["data"]["categories"]
    for body in ({"documentId": "nope"}, {"extensions": by_hash(reg_hash)}):
        missing = await send(http_session, hive, body)
        assert missing.codes() == ["PERSISTED_QUERY_NOT_FOUND"], body
    text = await send(http_session, hive, {"query": QUERY})
    assert text.status == 400 and text.codes() == ["PERSISTED_QUERY_REQUIRED"]
    # A manifest whose id is not its document's digest is a deploy error: it does not start.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"0" * 40: QUERY}))
    from app.config.settings import SettingsError
    from app.security.persisted import load_manifest
    with pytest.raises(SettingsError):
        load_manifest(str(bad))


async def test_cors_is_closed_unless_configured(
    prod: Gateway, start: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    async with http_session.options(prod.url + "/graphql", headers=preflight) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers
    open_ = start(CORS_ORIGINS="https://app.example")
    async with http_session.options(open_.url + "/graphql", headers=preflight) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "authorization" in resp.headers["Access-Control-Allow-Headers"].lower()
    async with http_session.post(open_.url + "/graphql", json={"query": QUERY},
                                 headers={"Origin": "https://app.example"}) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "RateLimit-Remaining" in resp.headers["Access-Control-Expose-Headers"]
        assert "Deprecation" in resp.headers["Access-Control-Expose-Headers"]
    async with http_session.options(open_.url + "/graphql", headers={
            **preflight, "Origin": "https://evil.example"}) as resp:
        assert resp.status == 400 and "Access-Control-Allow-Origin" not in resp.headers


async def test_security_headers_on_answers_and_refusals(
    prod: Gateway, http_session: aiohttp.ClientSession
) -> None:
    for data in (json.dumps({"query": QUERY}).encode(), b"{oops"):
        async with http_session.post(prod.url + "/graphql", data=data,
                                     headers={"Content-Type": "application/json"}) as resp:
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
            assert resp.headers["Referrer-Policy"] == "no-referrer"


async def test_introspection_and_the_ide_follow_their_settings(
    prod: Gateway, start: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    introspect = "{ __schema { queryType { name } } }"
    assert (await call(http_session, prod, introspect)).body["data"]["__schema"]
    closed = start(INTROSPECTION="false", GRAPHQL_IDE="false")
    answer = await call(http_session, closed, introspect)
    assert set(answer.codes()) == {"GRAPHQL_VALIDATION_FAILED"}
    assert answer.body.get("data") is None
    assert (await call(http_session, closed, "{ __typename }")).body["data"]  # not a leak
    async with http_session.get(closed.url + "/graphql", headers={"Accept": "text/html"}) as r:
        assert r.status != 200 or "graphiql" not in (await r.text()).lower()
    async with http_session.get(prod.url + "/graphql", headers={"Accept": "text/html"}) as r:
        assert r.status == 200 and "graphiql" in (await r.text()).lower()
