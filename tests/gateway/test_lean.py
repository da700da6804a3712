"""The lean /graphql path (app/http/lean.py) answers exactly as the full stack does: two
gateways, one with LEAN_PATH=false, get the same requests in the same order, and every answer's
status, headers and body must be the same (less what changes from one moment to the next: the
date, the rate limit's reset, trace ids). The requests cover what the lean path takes (one
JSON operation: data, errors, refusals by GraphQL, auth, limits, persisted queries, cost,
deprecations) and what it hands to the full stack (batches, bad bodies, other media types,
GET, a trusted document's id)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from yarl import URL

from tests.harness import Gateway, Services, start_gateway, token

PAGE = """query Page($id: ID!) { product(id: $id) { id name price { amount currency }
  inventory { quantity inStock } reviews(first: 3) { rating author { id name } } } }"""
TWO = "query A { product(id: \"p1\") { id } } query B { category(id: \"c1\") { id name } }"
APQ = "{ products(ids: [\"p1\", \"p2\"]) { id name } }"
DIGEST = hashlib.sha256(APQ.encode()).hexdigest()
JSON = {"Content-Type": "application/json"}
GRAPHQL_JSON = "application/graphql-response+json"
# What differs between two runs of one request on two processes (the budget refills by the
# second: the remaining count is compared on its own, below).
VOLATILE_HEADERS = {"date", "ratelimit-reset", "ratelimit-remaining", "content-length"}
TRACE_ID = re.compile(rb'"traceId":"[0-9a-f]{32}"')


def body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


CASES: list[tuple[str, str, dict[str, str], bytes]] = [
    ("typename", "POST", JSON, body(query="{ __typename }")),
    ("variables", "POST", JSON, body(query=PAGE, variables={"id": "p1"})),
    ("operation name", "POST", JSON, body(query=TWO, operationName="B")),
    ("no operation name", "POST", JSON, body(query=TWO)),
    ("missing entity", "POST", JSON, body(query=PAGE, variables={"id": "p-none"})),
    ("parse error", "POST", JSON, body(query="{ product(id: ")),
    ("validation error", "POST", JSON, body(query="{ product(id: \"p1\") { nope } }")),
    ("never ran, new media type", "POST", {**JSON, "Accept": GRAPHQL_JSON},
     body(query="{ nope }")),
    ("variable of the wrong type", "POST", JSON, body(query=PAGE, variables={"id": 5})),
    ("missing variable", "POST", JSON, body(query=PAGE)),
    ("private field, anonymous", "POST", JSON, body(query="{ me { id email } }")),
    ("private field, signed in", "POST",
     {**JSON, "Authorization": f"Bearer {token('u3', 'orders:read')}"},
     body(query="{ me { id email orders(first: 2) { edges { node { id } } } } }")),
    ("bad token", "POST", {**JSON, "Authorization": "Bearer nope"},
     body(query="{ __typename }")),
    ("too deep", "POST", JSON, body(query="{ product(id: \"p1\") { category { products(first: 2) "
                                         "{ edges { node { category { products(first: 2) { edges "
                                         "{ node { category { name } } } } } } } } } } }")),
    ("cost asked for", "POST", {**JSON, "X-Gateway-Cost": "1"}, body(query=PAGE,
                                                                     variables={"id": "p2"})),
    ("deprecated field", "POST", JSON, body(query="{ product(id: \"p1\") { inStock } }")),
    ("short deadline", "POST", {**JSON, "X-Request-Timeout-Ms": "5000"},
     body(query="{ product(id: \"p3\") { id } }")),
    ("bad deadline", "POST", {**JSON, "X-Request-Timeout-Ms": "soon"},
     body(query="{ __typename }")),
    ("mutation refused", "POST", JSON,
     body(query="mutation { addReview(input: {productId: \"p1\", rating: 9, body: \"\"}) "
                "{ review { id } } }")),
    ("subscription over POST", "POST", JSON,
     body(query="subscription { productUpdated(id: \"p1\") { id } }")),
    ("persisted query unknown", "POST", JSON,
     body(extensions={"persistedQuery": {"version": 1, "sha256Hash": DIGEST}}, query=None)),
    ("persisted query registered", "POST", JSON,
     body(query=APQ, extensions={"persistedQuery": {"version": 1, "sha256Hash": DIGEST}})),
    ("persisted query by hash", "POST", JSON,
     body(extensions={"persistedQuery": {"version": 1, "sha256Hash": DIGEST}})),
    ("no query", "POST", JSON, body(extensions={})),
    ("null query", "POST", JSON, body(query=None, variables=None, operationName=None)),
    ("charset parameter", "POST", {"Content-Type": "application/json; charset=utf-8"},
     body(query="{ __typename }")),
    ("client names", "POST", {**JSON, "apollographql-client-name": "web",
                              "apollographql-client-version": "1.2"},
     body(query="{ category(id: \"c2\") { name } }")),
    # What the full stack takes.
    ("batch", "POST", JSON, orjson.dumps([{"query": "{ __typename }"},
                                          {"query": "{ category(id: \"c1\") { id } }"}])),
    ("not JSON", "POST", JSON, b"{ query"),
    ("a JSON list of one string", "POST", JSON, b'["x"]'),
    ("query not a string", "POST", JSON, body(query=5)),
    ("variables not an object", "POST", JSON, body(query="{ __typename }", variables=[1])),
    ("operation name not a string", "POST", JSON, body(query="{ __typename }",
                                                       operationName=3)),
    ("unknown field in the body", "POST", JSON, body(query="{ __typename }", other=1)),
    ("upper-case media type", "POST", {"Content-Type": "APPLICATION/JSON"},
     body(query="{ __typename }")),
    ("text body", "POST", {"Content-Type": "text/plain"}, body(query="{ __typename }")),
    ("trusted document id", "POST", JSON, body(documentId=f"sha256:{DIGEST}")),
    ("the IDE's page", "GET", {"Accept": "text/html"}, b""),
    ("GET", "GET", {}, b"query=%7B__typename%7D"),
    ("GET with variables", "GET", {"Accept": GRAPHQL_JSON},
     b"query=" + quote(PAGE).encode() + b"&variables=%7B%22id%22%3A%22p5%22%7D"
     b"&operationName=Page"),
    ("GET of a mutation", "GET", {}, b"query=mutation%7BaddReview%7Bid%7D%7D"),
    ("GET with bad variables", "GET", {}, b"query=%7B__typename%7D&variables=%5B1"),
    ("GET with variables not an object", "GET", {}, b"query=%7B__typename%7D&variables=5"),
    ("GET of a hash alone", "GET", {},
     b"extensions=" + quote(orjson.dumps({"persistedQuery": {
         "version": 1, "sha256Hash": DIGEST}})).encode()),
    ("GET with a parameter twice", "GET", {}, b"query=%7B__typename%7D&query=%7Bnope%7D"),
    ("GET with an empty operation name", "GET", {}, b"query=%7B__typename%7D&operationName="),
    ("GET, an HTML client", "GET", {"Accept": "text/html"}, b"query=%7B__typename%7D"),
    ("debug", "POST", {**JSON, "X-Gateway-Debug": "1"}, body(query="{ __typename }")),
]


# What some of the cases are answered (so that each case tests what its name says).
STATUS = {"typename": 200, "variables": 200, "bad token": 401, "bad deadline": 400,
          "never ran, new media type": 400, "text body": 415, "not JSON": 400, "batch": 200,
          "the IDE's page": 200, "GET": 200, "GET with variables": 200,
          "GET of a mutation": 405, "GET with bad variables": 400}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, services: Services
         ) -> Iterator[tuple[Gateway, Gateway]]:
    # The rate limit on (its headers and charges are part of every answer), each gateway
    # with its own counts; the same requests in the same order leave both at the same count.
    # A day's window: the budget refills by about one unit a second.
    env = {"CACHE_ENABLED": "false", "BREAKER_ENABLED": "false",
           "RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_WINDOW_S": "86400",
           "RATE_LIMIT_ANONYMOUS": "100000"}
    tmp = tmp_path_factory.mktemp("lean")
    lean = start_gateway(tmp, services, env=env)
    try:
        full = start_gateway(tmp, services, env={**env, "LEAN_PATH": "false"})
    except Exception:
        lean.stop()
        raise
    yield lean, full
    lean.stop()
    full.stop()


async def answer(session: aiohttp.ClientSession, gateway: Gateway, method: str,
                 headers: dict[str, str], data: bytes, volatile: set[str] = VOLATILE_HEADERS
                 ) -> tuple[int, list[tuple[str, str]], bytes]:
    url = URL(gateway.url + "/graphql")
    if method == "GET":  # (`data` is the query string, as sent)
        url = URL(f"{url}?{data.decode()}" if data else str(url), encoded=True)
    async with session.request(method, url, headers=headers,
                               data=data if method == "POST" else None) as resp:
        raw = await resp.read()
        kept = [(k.lower(), v) for k, v in resp.headers.items()
                if k.lower() not in volatile]
        return resp.status, kept, TRACE_ID.sub(b'"traceId":"-"', raw)


async def test_both_paths_answer_every_request_alike(pair: tuple[Gateway, Gateway]) -> None:
    lean, full = pair
    async with aiohttp.ClientSession() as session:
        for name, method, headers, data in CASES:
            got = await answer(session, lean, method, headers, data)
            want = await answer(session, full, method, headers, data)
            assert got == want, name
            assert got[0] == STATUS.get(name, got[0]), (name, got)
            if name in ("GET", "GET with variables", "GET, an HTML client"):
                assert orjson.loads(got[2]).get("data"), (name, got)


async def test_the_rate_limits_count_alike_on_both_paths(
        pair: tuple[Gateway, Gateway]) -> None:
    """After the same requests, the same budget is left on both, within the refill of the
    test's few seconds: each charge and refund happened on the lean path too."""
    lean, full = pair
    probe = ("POST", JSON, body(query=PAGE, variables={"id": "p4"}))
    async with aiohttp.ClientSession() as session:
        for _ in range(20):  # far more than the refill meanwhile
            _, lean_headers, _ = await answer(session, lean, *probe, volatile=set())
            _, full_headers, _ = await answer(session, full, *probe, volatile=set())
    left, limit = (int(dict(lean_headers)[h]) for h in ("ratelimit-remaining",
                                                         "ratelimit-limit"))
    assert abs(left - int(dict(full_headers)["ratelimit-remaining"])) <= 10
    assert left < limit - 20 * 10  # (the page costs more than 10)
