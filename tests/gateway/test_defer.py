"""Incremental delivery (issue 18 point 2): @defer and @stream answered in parts, as
multipart/mixed (graphql-js 17's format, `incrementalSpec=v0.2`) or Server-Sent Events, to a
client that accepts them, through the same limits, auth, errors and loaders as any query;
the whole result in one JSON answer to any other client. Real processes: the reference
services, gateways, and a TCP relay that holds the recommendations service's answers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cache.test_held_evictions import start_relay
from tests.conftest import QUERIES
from tests.gateway.incremental import EVENT_STREAM, MULTIPART, merged, multipart_parts, sse_events
from tests.harness import Gateway, Process, Services, gateways, http, metric_total, token

PAGE = (QUERIES / "product_page_defer.graphql").read_text()
PAGE_WHOLE = PAGE.replace('@defer(label: "reviews")', "").replace(
    '@defer(label: "recommendations")', "")
PRODUCTS = '{ topProducts(first: 3) { id name ... @defer(label: "more") { description } } }'
USER = token("u1")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("defer")


@pytest.fixture(scope="module")
def gateway_of(tmp: Path, services: Services) -> Iterator[Any]:
    with gateways(tmp, services, CACHE_ENABLED="false", BREAKER_ENABLED="false") as start:
        yield start


@pytest.fixture(scope="module")
def gw(gateway_of: Any) -> Gateway:
    gateway: Gateway = gateway_of()
    return gateway


@pytest.fixture
def clean(services: Services) -> Iterator[Services]:
    with services.cleaned() as clean_:
        yield clean_


class Answer:
    def __init__(self, status: int, headers: Any, parts: list[dict[str, Any]]) -> None:
        self.status, self.headers, self.parts = status, headers, parts

    @property
    def whole(self) -> dict[str, Any]:
        return merged(self.parts)


async def ask(session: aiohttp.ClientSession, gateway: Gateway, query: str,
              accept: str = MULTIPART, variables: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None, body: Any = None) -> Answer:
    """POST `query`; the parts of a multipart answer, or the one JSON answer as one part."""
    async with session.post(gateway.url + "/graphql",
                            json=body if body is not None else
                            {"query": query, "variables": variables or {}},
                            headers={"Accept": accept, **(headers or {})}) as resp:
        if resp.headers["content-type"].startswith("multipart/mixed"):
            parts = [part async for part in multipart_parts(resp)]
        else:
            parts = [await resp.json(content_type=None)]
        return Answer(resp.status, resp.headers, parts)


def codes(errors: list[dict[str, Any]] | None) -> list[str]:
    return [e["extensions"]["code"] for e in errors or ()]


# -- the format ----------------------------------------------------------------------------------

async def test_multipart_parts_first_what_is_not_deferred_then_the_rest(
        gw: Gateway, http_session: aiohttp.ClientSession, clean: Services) -> None:
    answer = await ask(http_session, gw, PRODUCTS)
    assert answer.status == 200
    assert answer.headers["content-type"] == \
        'multipart/mixed; boundary="-"; incrementalSpec=v0.2'
    # Its headers leave before the deferred parts exist: nothing may store it.
    assert answer.headers["cache-control"] == "no-store"
    assert "Accept" in answer.headers["vary"]
    first, *rest = answer.parts
    assert first["hasNext"] is True
    products = first["data"]["topProducts"]
    assert len(products) == 3 and all(set(p) == {"id", "name"} for p in products)
    # One pending fragment per product, each with its label and path.
    assert [p["path"] for p in first["pending"]] == [["topProducts", i] for i in range(3)]
    assert {p["label"] for p in first["pending"]} == {"more"}
    assert rest[-1]["hasNext"] is False
    done = [c["id"] for part in rest for c in part.get("completed") or ()]
    assert sorted(done) == sorted(p["id"] for p in first["pending"])
    # The parts make the same result as the query without @defer, answered as JSON.
    plain = await ask(http_session, gw, PRODUCTS.replace('@defer(label: "more")', ""),
                      accept="application/json")
    assert answer.whole == plain.parts[0]


async def test_event_stream_sends_each_part_as_a_next_event_then_complete(
        gw: Gateway, http_session: aiohttp.ClientSession, clean: Services) -> None:
    async with http_session.post(gw.url + "/graphql", json={"query": PRODUCTS},
                                 headers={"Accept": EVENT_STREAM}) as resp:
        assert resp.status == 200
        events = [event async for event in sse_events(resp)]
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "complete" and set(kinds[:-1]) == {"next"} and len(kinds) >= 3
    parts = [json.loads(data) for kind, data in events if kind == "next"]
    assert parts[0]["hasNext"] is True and parts[0]["pending"]
    assert parts[-1]["hasNext"] is False
    multipart = await ask(http_session, gw, PRODUCTS)
    assert merged(parts) == multipart.whole


async def test_event_stream_parts_carry_their_errors_and_a_get_streams_too(
        gw: Gateway, http_session: aiohttp.ClientSession, clean: Services) -> None:
    query = '{ user(id: "u2") { id ... @defer(label: "private") { email } } }'
    async with http_session.post(gw.url + "/graphql", json={"query": query},
                                 headers={"Accept": EVENT_STREAM,
                                          "Authorization": f"Bearer {USER}"}) as resp:
        events = [event async for event in sse_events(resp)]
    parts = [json.loads(data) for kind, data in events if kind == "next"]
    assert "errors" not in parts[0] and parts[0]["data"] == {"user": {"id": "u2"}}
    (entry,) = [e for part in parts[1:] for e in part.get("incremental") or ()]
    assert codes(entry["errors"]) == ["FORBIDDEN"] and entry["errors"][0]["path"] == \
        ["user", "email"]
    async with http_session.get(gw.url + "/graphql", params={"query": PRODUCTS},
                                headers={"Accept": MULTIPART}) as resp:
        got = [part async for part in multipart_parts(resp)]
    assert len(got) > 1 and got[0]["pending"]
    assert merged(got) == (await ask(http_session, gw, PRODUCTS)).whole


@pytest.mark.parametrize("accept", [
    "application/json",
    "application/graphql-response+json",
    None,  # no Accept at all
    "multipart/mixed;deferSpec=20220824, application/json",  # Apollo Client 3's format only
    "multipart/mixed;incrementalSpec=v0.2;q=0, application/json",
])
async def test_a_client_that_does_not_accept_the_parts_gets_the_whole_result(
        gw: Gateway, http_session: aiohttp.ClientSession, clean: Services,
        accept: str | None) -> None:
    headers = {} if accept is None else {"Accept": accept}
    planned = metric_total(gw.url, "gateway_planned_operations_total")
    async with http_session.post(gw.url + "/graphql", json={"query": PRODUCTS},
                                 headers=headers) as resp:
        assert resp.status == 200
        assert not resp.headers["content-type"].startswith("multipart")
        body = await resp.json(content_type=None)
    assert "hasNext" not in body and "pending" not in body
    products = body["data"]["topProducts"]
    assert all(p["description"] for p in products)  # the deferred field, in place
    # On the plan executor, as the same query without @defer.
    assert metric_total(gw.url, "gateway_planned_operations_total") == planned + 1
    plain = await ask(http_session, gw, PRODUCTS.replace('@defer(label: "more")', ""),
                      accept="application/json")
    assert body == plain.parts[0]


async def test_stream_sends_initial_count_items_first_and_the_rest_after(
        gw: Gateway, http_session: aiohttp.ClientSession, clean: Services) -> None:
    query = '{ topProducts(first: 5) @stream(initialCount: 2, label: "rest") { id name } }'
    answer = await ask(http_session, gw, query)
    first = answer.parts[0]
    assert len(first["data"]["topProducts"]) == 2
    assert first["pending"] == [{"id": "0", "path": ["topProducts"], "label": "rest"}]
    items = [item for part in answer.parts[1:] for entry in part.get("incremental") or ()
             for item in entry["items"]]
    assert len(items) == 3
    plain = await ask(http_session, gw, query.replace(
        '@stream(initialCount: 2, label: "rest")', ""), accept="application/json")
    assert answer.whole == plain.parts[0]


async def test_if_false_is_answered_whole(
        gw: Gateway, http_session: aiohttp.ClientSession, clean: Services) -> None:
    query = ('query($d: Boolean!) { topProducts(first: 3) @stream(if: $d) { id '
             '... @defer(if: $d) { description } } }')
    off = await ask(http_session, gw, query, variables={"d": False})
    assert off.headers["content-type"].startswith("application/json")  # one answer
    assert "hasNext" not in off.parts[0]
    assert len(off.parts[0]["data"]["topProducts"]) == 3
    assert all(p["description"] for p in off.parts[0]["data"]["topProducts"])
    on = await ask(http_session, gw, query, variables={"d": True})
    assert len(on.parts) > 1 and on.whole == off.parts[0]


async def test_labels_name_each_deferred_fragment(
        gw: Gateway, http_session: aiohttp.ClientSession, clean: Services) -> None:
    query = """query { product(id: "p1") { id
        ... @defer(label: "price") { price { amount currency } }
        ...Stock @defer(label: "stock") } }
      fragment Stock on Product { inventory { quantity } }"""
    answer = await ask(http_session, gw, query)
    pending = {p["label"]: p for p in answer.parts[0]["pending"]}
    assert set(pending) == {"price", "stock"}
    assert all(p["path"] == ["product"] for p in pending.values())
    by_id = {entry["id"]: entry["data"] for part in answer.parts[1:]
             for entry in part.get("incremental") or ()}
    assert set(by_id[pending["price"]["id"]]) == {"price"}
    assert set(by_id[pending["stock"]["id"]]) == {"inventory"}


# -- errors, auth, limits ------------------------------------------------------------------------

async def test_errors_of_a_deferred_fragment_are_in_its_part(
        gw: Gateway, http_session: aiohttp.ClientSession, clean: Services) -> None:
    clean.set_faults("reviews", error_rate=1.0)
    query = '{ product(id: "p1") { id name ... @defer(label: "rev") { reviews(first: 2) { id } } } }'
    answer = await ask(http_session, gw, query)
    first = answer.parts[0]
    assert "errors" not in first and first["data"]["product"]["name"]
    entries = [e for part in answer.parts[1:] for e in part.get("incremental") or ()]
    assert len(entries) == 1
    assert entries[0]["data"] == {"reviews": []}  # the partial result's fallback
    assert codes(entries[0]["errors"]) == ["UPSTREAM_UNAVAILABLE"]
    assert entries[0]["errors"][0]["path"] == ["product", "reviews"]


async def test_a_deferred_private_field_is_checked_as_any(
        gw: Gateway, http_session: aiohttp.ClientSession, clean: Services) -> None:
    query = ('query($id: ID!) { user(id: $id) { id ... @defer(label: "private") '
             '{ email } } }')
    headers = {"Authorization": f"Bearer {USER}"}
    other = await ask(http_session, gw, query, variables={"id": "u2"}, headers=headers)
    entry = other.parts[-1]["incremental"][0]
    assert entry["data"] == {"email": None}
    assert codes(entry["errors"]) == ["FORBIDDEN"]
    own = await ask(http_session, gw, query, variables={"id": "u1"}, headers=headers)
    entry = own.parts[-1]["incremental"][0]
    assert entry["data"]["email"] and "errors" not in entry


async def test_limits_count_deferred_selections(
        gateway_of: Any, http_session: aiohttp.ClientSession, clean: Services) -> None:
    gateway = gateway_of(MAX_QUERY_COST="15", RATE_LIMIT_ENABLED="true",
                         RATE_LIMIT_ANONYMOUS="1000", RATE_LIMIT_WINDOW_S="600")
    # By the IBM cost directives, 10 x (1 + 1) = 20: over 15 only with the deferred category
    # counted (10 without).
    query = '{ topProducts(first: 10) { id ... @defer { category { name } } } }'
    answer = await ask(http_session, gateway, query,
                       accept="multipart/mixed;incrementalSpec=v0.2, "
                       "application/graphql-response+json")
    assert answer.status == 400
    assert codes(answer.parts[0]["errors"]) == ["QUERY_TOO_COMPLEX"]
    undeferred = await ask(http_session, gateway,
                           query.replace("... @defer { category { name } }", ""))
    assert undeferred.status == 200
    # The rate limit charges a deferred query the estimate of the same query whole; the whole
    # one is then refunded down to its actual cost (what its answer held), the deferred one
    # is not: its headers, which say what it was charged, leave before its parts exist.
    within = '{ topProducts(first: 5) { id ... @defer { reviews(first: 2) { id } } } }'
    spent, costs = [], []
    for q in (within, within.replace("@defer", "")):
        first = await ask(http_session, gateway, q, headers={"X-Gateway-Cost": "1"})
        second = await ask(http_session, gateway, q, headers={"X-Gateway-Cost": "1"})
        spent.append(int(first.headers["RateLimit-Remaining"])
                     - int(second.headers["RateLimit-Remaining"]))
        costs.append(second.parts[0]["extensions"]["cost"])
    assert costs[0]["estimated"] == costs[1]["estimated"] == 5 * (1 + 2)
    assert costs[0]["actual"] is None and spent[0] == 15  # deferred: no refund
    assert 5 <= costs[1]["actual"] <= 15 and spent[1] == costs[1]["actual"]


# -- loaders -------------------------------------------------------------------------------------

async def test_loaders_batch_a_deferred_level_and_share_what_the_first_part_read(
        gw: Gateway, http_session: aiohttp.ClientSession, clean: Services) -> None:
    query = """{ topProducts(first: 10) { id name
        ... @defer(label: "reviews") { reviews(first: 3) { id product { id name }
                                                            author { id name } } } } }"""
    clean.reset_stats()
    answer = await ask(http_session, gw, query)
    assert len(answer.parts[0]["pending"]) == 10  # ten deferred fragments...
    stats = {name: clean.stats(name)["requests"] for name in ("catalog", "reviews", "users")}
    # ...whose lookups still go out together: one reviews call for the ten products, one
    # users call for every author; the reviews' products were read by the first part.
    assert sum(stats["reviews"].values()) == 1, stats
    assert sum(stats["users"].values()) == 1, stats
    assert sum(stats["catalog"].values()) == 1, stats  # the listing alone
    whole = answer.whole["data"]["topProducts"]
    assert all(r["product"]["id"] == p["id"] for p in whole for r in p["reviews"])


# -- batches and the response cache --------------------------------------------------------------

async def test_a_batch_with_defer_is_answered_whole(
        gw: Gateway, http_session: aiohttp.ClientSession, clean: Services) -> None:
    body = [{"query": PRODUCTS}, {"query": '{ product(id: "p1") { id ... @defer { name } } }'}]
    async with http_session.post(gw.url + "/graphql", json=body,
                                 headers={"Accept": MULTIPART}) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("application/json")
        results = await resp.json(content_type=None)
    assert all(p["description"] for p in results[0]["data"]["topProducts"])
    assert results[1]["data"]["product"]["name"]
    assert all("hasNext" not in r for r in results)


async def test_the_response_cache_never_stores_a_part(
        gateway_of: Any, http_session: aiohttp.ClientSession, clean: Services) -> None:
    gateway = gateway_of(CACHE_ENABLED="true", RESPONSE_CACHE="true")
    query = '{ product(id: "p2") { id name ... @defer { description } } }'
    for _ in range(2):
        answer = await ask(http_session, gateway, query)
        assert len(answer.parts) > 1 and "age" not in answer.headers
    # Nothing was stored: the first JSON answer is computed, and that one is kept.
    json_first = await ask(http_session, gateway, query, accept="application/json")
    assert "age" not in json_first.headers
    json_second = await ask(http_session, gateway, query, accept="application/json")
    assert "age" in json_second.headers
    # A client that accepts parts is then answered from the cache, whole.
    cached = await ask(http_session, gateway, query)
    assert "age" in cached.headers and cached.parts == json_first.parts


# -- the product page ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def held(tmp: Path, services: Services, gateway_of: Any) -> Iterator[tuple[Gateway, Process]]:
    """A gateway that reaches the recommendations service through a relay the test can
    stop: while it is stopped, no answer of that service can reach the gateway."""
    relay, port = start_relay(tmp, services.ports["recommendations"])
    # (Timeouts long enough for a loaded machine: the relay is stopped until the test has
    # read the first part, and a retried call would be a second answer.)
    gateway = gateway_of(RECOMMENDATIONS_URL=f"http://127.0.0.1:{port}",
                         REQUEST_DEADLINE_S="30", UPSTREAM_TIMEOUT_S="20",
                         UPSTREAM_CONNECT_TIMEOUT_S="20")
    yield gateway, relay
    os.kill(relay.proc.pid, signal.SIGCONT)
    relay.stop()


def answered(services: Services, name: str) -> int:
    """Requests the service has finished answering (its /_timing counts them after)."""
    return len(http("GET", services.url(name) + "/_timing")[2]["handling_ms"])


async def test_product_page_first_part_comes_before_the_slow_recommendations(
        held: tuple[Gateway, Process], http_session: aiohttp.ClientSession,
        clean: Services) -> None:
    gateway, relay = held
    clean.set_faults("recommendations", latency_ms=300)  # the slow service
    os.kill(relay.proc.pid, signal.SIGSTOP)
    stopped = True
    try:
        async with http_session.post(
                gateway.url + "/graphql", json={"query": PAGE, "variables": {"id": "p1"}},
                headers={"Accept": MULTIPART, "Authorization": f"Bearer {USER}"}) as resp:
            parts: AsyncIterator[dict[str, Any]] = multipart_parts(resp)
            first = await asyncio.wait_for(parts.__anext__(), 30)
            # The first part came while the recommendations service could not answer.
            assert answered(clean, "recommendations") == 0
            assert first["data"]["product"]["name"] and first["data"]["me"] == {"id": "u1"}
            labels = {p["label"] for p in first["pending"]}
            assert labels == {"reviews", "recommendations"}
            os.kill(relay.proc.pid, signal.SIGCONT)
            stopped = False
            rest = [part async for part in parts]
    finally:
        if stopped:
            os.kill(relay.proc.pid, signal.SIGCONT)
    assert answered(clean, "recommendations") == 1
    page = merged([first, *rest])
    assert "errors" not in page, page
    assert page["data"]["me"]["recommendations"]
    assert page["data"]["product"]["reviews"] is not None
    # The same page asked whole has the same data.
    whole = await ask(http_session, gateway, PAGE_WHOLE, accept="application/json",
                      variables={"id": "p1"}, headers={"Authorization": f"Bearer {USER}"})
    assert whole.parts[0] == page
