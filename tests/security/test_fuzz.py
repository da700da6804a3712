"""Random documents and variables (hypothesis) against /graphql: the answer is always a
well-formed GraphQL response with a known code, never a 500 or a stack trace, and nothing
refused is ever written."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import Gateway, Services, http

KNOWN = {"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT",
         "BAD_REQUEST", "QUERY_TOO_COMPLEX", "UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND",
         "PAYLOAD_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE", "METHOD_NOT_ALLOWED"}
VALID = [
    '{ product(id: "p1") { id name reviews(first: 2) { author { id } } } }',
    "query($ids: [ID!]!) { products(ids: $ids) { id price { amount } } }",
    "query($n: Int) { topProducts(first: $n) { id category { name } } }",
    'mutation { addReview(input: {productId: "p1", rating: 5, body: "x"}) { review { id } } }',
    "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { order { id } } }",
    '{ user(id: "u1") { id email orders { edges { node { id } } } } }',
    "{ categories { id name products(first: 3) { edges { node { id } } } } }",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


@st.composite
def documents(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from(VALID))
    edits = draw(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 3),
                                    st.text(alphabet="{}()[]:$!@.,\"' _azAZ019#\\\n",
                                            max_size=4)), max_size=4))
    for at, cut, insert in edits:  # cut and splice: near-valid documents hit the deep paths
        at %= len(base) + 1
        base = base[:at] + insert + base[at + cut:]
    return draw(st.one_of(st.just(base), st.text(max_size=60)))


@st.composite
def operations(draw: st.DrawFn) -> Any:
    body: dict[str, Any] = {"query": draw(documents())}
    if draw(st.booleans()):
        body["variables"] = draw(st.one_of(
            st.dictionaries(st.sampled_from(["ids", "n", "input", "id", "x"]), json_values,
                            max_size=3),
            json_values))
    if draw(st.booleans()):
        body["operationName"] = draw(st.one_of(st.none(), st.text(max_size=8), json_values))
    return draw(st.one_of(st.just(body), json_values))


def bodies() -> Any:
    """An operation (or any JSON), or a batch of them."""
    return operations() | st.lists(operations(), max_size=4)


def writes(services: Services) -> int:
    total = 0
    for stats in services.all_stats().values():
        for route, count in stats["requests"].items():
            method = route.split(" ", 1)[0]
            if method in ("POST", "PUT", "PATCH", "DELETE") and "/query" not in route:
                total += count
    return total


def test_random_requests_always_get_a_well_formed_answer(
    prod: Gateway, sservices: Services
) -> None:
    sservices.reset_stats()

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=bodies(), raw=st.booleans())
    def check(body: Any, raw: bool) -> None:
        if raw and isinstance(body, dict) and isinstance(body.get("query"), str):
            # Not JSON at all: a document sent as the body.
            req = urllib.request.Request(prod.url + "/graphql", method="POST",
                                         data=body["query"].encode(),
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    status, payload = resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as err:
                status, payload = err.code, json.loads(err.read())
        else:
            status, _, payload = http("POST", prod.url + "/graphql", body)
        assert status in (200, 400, 401, 405, 413, 415), (status, body, payload)
        if isinstance(payload, list):  # a batch's results, one per operation
            assert status == 200 and isinstance(body, list) and len(payload) == len(body)
        for result in payload if isinstance(payload, list) else [payload]:
            assert isinstance(result, dict), payload
            assert set(result) <= {"data", "errors", "extensions"}, payload
            errors = result.get("errors") or []
            assert "data" in result or errors, payload
            for error in errors:
                assert isinstance(error["message"], str)
                assert error["extensions"]["code"] in KNOWN, (body, error)
                assert "Traceback" not in error["message"]

    check()
    assert writes(sservices) == 0  # anonymous: every write was refused before it was sent
