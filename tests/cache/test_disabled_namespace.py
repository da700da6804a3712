"""A namespace switched off by a cache hint (maxAge 0) is simply not cached: the changes that
would evict it are still applied, and a write that makes them still answers (issue 16 d)."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import orjson
import pytest

from tests.cache.conftest import CacheStack, Query, make_gateway
from tests.gateway.test_events import post, signed
from tests.harness import Gateway

ADD = """mutation($input: AddReviewInput!) { addReview(input: $input) {
  review { id product { id reviews(first: 1) { id } } } errors { code } } }"""


@pytest.fixture(scope="module")
def uncached_reviews(stack: CacheStack, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path_factory.mktemp("uncached-reviews"), stack.services,
                           CACHE_HINTS='{"Product.reviews": {"maxAge": 0}}')
    yield gateway
    gateway.stop()


async def test_add_review_answers_when_its_list_is_not_cached(
        query: Query, uncached_reviews: Gateway) -> None:
    status, _, body = await query(
        uncached_reviews, ADD, {"input": {"productId": "p3302", "rating": 5, "body": "Good."}},
        user="u33")
    assert status == 200 and "errors" not in body, body
    payload = body["data"]["addReview"]
    assert payload["errors"] == []
    assert payload["review"]["product"]["reviews"][0]["id"] == payload["review"]["id"]


async def test_a_review_event_is_applied_when_its_list_is_not_cached(
        uncached_reviews: Gateway, http_session: aiohttp.ClientSession) -> None:
    event = orjson.dumps({"type": "Review", "id": "r1", "op": "create", "version": 10**9,
                          "at": "2026-12-02T10:00:00Z"})
    assert (await post(http_session, uncached_reviews, event, signed(event)))[0] == 204
    # A redelivery is acknowledged too (and ignored).
    assert (await post(http_session, uncached_reviews, event, signed(event)))[0] == 204
