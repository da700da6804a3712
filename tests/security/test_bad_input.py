"""Every bad request gets a clear error with the status and `extensions.code` the GraphQL
over HTTP specification gives for `application/json`, never a stack trace; and limits on
documents are checked before any resolver runs (the services see no request)."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from services.seed import Dataset
from tests.harness import Gateway, Services, token
from tests.security.conftest import Answer, call


async def raw(session: aiohttp.ClientSession, gateway: Gateway, method: str = "POST",
              data: bytes | None = None, content_type: str | None = "application/json",
              params: dict[str, str] | None = None) -> Answer:
    headers = {"Content-Type": content_type} if content_type else {}
    async with session.request(method, gateway.url + "/graphql", data=data, params=params,
                               headers=headers) as resp:
        text = await resp.text()
        import json

        try:
            body = json.loads(text)
        except ValueError:
            pytest.fail(f"not JSON ({resp.status}): {text[:200]}")
        return Answer(resp.status, CIMultiDict(resp.headers), body)


def assert_refused(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer.body
    assert answer.codes() == [code], answer.body
    assert "Traceback" not in str(answer.body)


async def test_transport_errors(prod: Gateway, http_session: aiohttp.ClientSession) -> None:
    assert_refused(await raw(http_session, prod, data=b"{not json"), 400, "BAD_REQUEST")
    assert_refused(await raw(http_session, prod, data=b'{"query": "{ me { id } }"}',
                             content_type="text/plain"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_refused(await raw(http_session, prod, data=b'{"variables": {}}'), 400,
                   "BAD_REQUEST")
    # A batch is an array of operations (tests/gateway/test_operation_batching.py); a
    # malformed one is refused whole.
    assert_refused(await raw(http_session, prod, data=b"[]"), 400, "BAD_REQUEST")
    assert_refused(await raw(http_session, prod, data=b'[{"query": "{ me { id } }"}, 1]'),
                   400, "BAD_REQUEST")
    assert_refused(await raw(http_session, prod, data=b"[" + b",".join(
        [b'{"query": "{ me { id } }"}'] * 11) + b"]"), 400, "BATCH_TOO_LARGE")


async def test_a_mutation_over_get_is_refused(
    prod: Gateway, http_session: aiohttp.ClientSession, sservices: Services
) -> None:
    sservices.reset_stats()
    answer = await raw(http_session, prod, "GET", content_type=None, params={
        "query": 'mutation { addReview(input: {productId: "p1", rating: 5, body: "x"}) '
                 "{ review { id } } }"})
    assert_refused(answer, 405, "METHOD_NOT_ALLOWED")
    assert not sservices.stats("reviews")["requests"]  # nothing was written


async def test_a_ten_megabyte_body_is_refused_unread(
    prod: Gateway, http_session: aiohttp.ClientSession
) -> None:
    body = b'{"query": "{ me { id } }", "variables": {"x": "' + b"a" * 10_000_000 + b'"}}'
    assert_refused(await raw(http_session, prod, data=body), 413, "PAYLOAD_TOO_LARGE")

    async def chunks() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b"a" * 100_000

    async with http_session.post(prod.url + "/graphql", data=chunks(),
                                 headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 413
        assert (await resp.json())["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize(("query", "variables", "code"), [
    ("{ me { id }", None, "GRAPHQL_PARSE_FAILED"),
    ("{ nope }", None, "GRAPHQL_VALIDATION_FAILED"),
    ("query($id: ID!) { product(id: $id) { id } }", {"id": {"not": "an id"}}, "BAD_USER_INPUT"),
    ("query($n: Int) { topProducts(first: $n) { id } }", {"n": "ten"}, "BAD_USER_INPUT"),
    ("query($id: ID!) { product(id: $id) { id } }", None, "BAD_USER_INPUT"),
    ("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }", None,
     "GRAPHQL_VALIDATION_FAILED"),
])
async def test_documents_and_variables_that_do_not_fit(
    prod: Gateway, http_session: aiohttp.ClientSession, query: str,
    variables: dict[str, Any] | None, code: str
) -> None:
    answer = await call(http_session, prod, query, variables)
    assert answer.status == 200 and answer.codes()[:1] == [code], answer.body
    assert answer.body.get("data") is None


def depth_bomb(depth: int) -> str:
    inner = "id"
    for level in range(depth):
        inner = (f"reviews(first: 1) {{ author {{ reviews(first: 1) {{ product {{ {inner} }} }} }} }}"
                 if level % 2 == 0 else f"id {inner}")
    return f"{{ product(id: \"p1\") {{ {inner} }} }}"


async def test_limits_refuse_before_any_resolver_runs(
    prod: Gateway, http_session: aiohttp.ClientSession, sservices: Services
) -> None:
    sservices.reset_stats()
    aliases = "{ " + " ".join(f"a{i}: product(id: \"p1\") {{ id }}" for i in range(40)) + " }"
    nested = "{ product(id: \"p1\") { " + "reviews(first: 1) { product { " * 8 + "id" \
        + " } }" * 8 + " } }"
    costly = ('{ topProducts(first: 100) { reviews(first: 100) { author { '
              'reviews(first: 100) { id } } } } }')
    for query, measure in ((nested, "depth"), (aliases, "aliases"), (costly, "cost")):
        answer = await call(http_session, prod, query)
        assert answer.status == 200 and answer.codes() == ["QUERY_TOO_COMPLEX"], answer.body
        ext = answer.body["errors"][0]["extensions"]
        assert ext["measure"] == measure and ext["actual"] > ext["limit"]
        assert answer.body["data"] is None
    tokens = "{ " + "__typename " * 4000 + "}"
    answer = await call(http_session, prod, tokens)
    assert answer.codes() == ["GRAPHQL_PARSE_FAILED"]
    assert "tokens" in answer.body["errors"][0]["message"]
    assert all(not sservices.stats(n)["requests"] for n in ("catalog", "reviews", "users"))
    ok = await call(http_session, prod, "query($n: Int) { topProducts(first: $n) { id } }",
                    {"n": 3})
    assert "errors" not in ok.body


async def test_cost_counts_defaults_nulls_lists_and_introspection(
    prod: Gateway, http_session: aiohttp.ClientSession
) -> None:
    async def refused(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = await call(http_session, prod, query, variables)
        assert answer.codes() == ["QUERY_TOO_COMPLEX"], answer.body
        return answer.body["errors"][0]["extensions"]

    # An explicit null `first` is its default (the resolvers' too), not a 1.
    nested = ("query($n: Int) { topProducts(first: 100) { reviews(first: $n) { author { "
              "reviews(first: $n) { product { reviews(first: $n) { id } } } } } } }")
    assert (await refused(nested, {"n": None}))["measure"] == "cost"
    # A list without `first` counts many items (categories: 100).
    listing = "{ categories { products(first: 100) { edges { node { id name } } } } }"
    assert (await refused(listing))["actual"] > 10_000
    # Introspection is measured: aliases inside __schema count.
    aliases = "{ __schema { " + " ".join(f"t{i}: types {{ name }}" for i in range(40)) + " } }"
    assert (await refused(aliases))["measure"] == "aliases"


async def test_a_fragment_bomb_is_measured_in_no_time(
    prod: Gateway, http_session: aiohttp.ClientSession
) -> None:
    # Each fragment spreads the one before twice: 2^40 fields if walked naively.
    fragments = ["fragment F0 on Query { __typename }"] + [
        f"fragment F{i} on Query {{ ...F{i - 1} a{i}: __typename ...F{i - 1} }}"
        for i in range(1, 41)]
    query = "{ ...F40 }\n" + "\n".join(fragments)
    began = time.perf_counter()
    answer = await call(http_session, prod, query)
    assert time.perf_counter() - began < 2
    assert answer.codes() == ["QUERY_TOO_COMPLEX"]


async def test_a_million_ids_is_refused_by_cost(
    prod: Gateway, http_session: aiohttp.ClientSession, sservices: Services
) -> None:
    sservices.reset_stats()
    ids = [f"p{i}" for i in range(1_000_000)]
    answer = await call(http_session, prod, "query($ids: [ID!]!) { products(ids: $ids) { id } }",
                        {"ids": ids})
    # 14 MB of JSON: the body limit (1 MB) refuses it before it is parsed.
    assert answer.status == 413 and answer.codes() == ["PAYLOAD_TOO_LARGE"]
    ids = [f"p{i}" for i in range(20_000)]  # under the body limit, over the cost limit
    answer = await call(http_session, prod, "query($ids: [ID!]!) { products(ids: $ids) { id } }",
                        {"ids": ids})
    assert answer.codes() == ["QUERY_TOO_COMPLEX"]
    assert answer.body["errors"][0]["extensions"]["actual"] == 20_000  # a product each
    assert not sservices.stats("catalog")["requests"]


async def test_no_write_from_a_refused_mutation(
    prod: Gateway, http_session: aiohttp.ClientSession, sservices: Services, seed: Dataset
) -> None:
    sservices.reset_stats()
    mutation = ('mutation { addReview(input: {productId: "p1", rating: 5, body: "x"}) '
                '{ review { id } } }')
    for tok in (None, token("u1", "read:orders")):
        answer = await call(http_session, prod, mutation, token=tok)
        assert answer.codes() in (["UNAUTHENTICATED"], ["FORBIDDEN"])
    assert not sservices.stats("reviews")["requests"]
