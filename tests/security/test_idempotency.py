"""`addReview` may be sent again safely with an `idempotencyKey` (the gateway keeps the key:
the reviews service has none), and both mutations' keys are the caller's own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.harness import Gateway, Services, http, token
from tests.security.conftest import Answer, call

ADD_REVIEW = """mutation($input: AddReviewInput!) {
  addReview(input: $input) { review { id body rating } errors { code field } }
}"""
PLACE_ORDER = """mutation($input: PlaceOrderInput!) {
  placeOrder(input: $input) { order { id } errors { code field } }
}"""
WRITER = "write:reviews write:orders read:orders"


def posted(services: Services, service: str, route: str) -> int:
    return int(services.stats(service)["requests"].get(route, 0))


def reviews_with(services: Services, author: str, body: str) -> list[dict[str, Any]]:
    """The author's reviews with this body, as the reviews service holds them."""
    _, _, found = http("GET", services.url("reviews") + f"/reviews?author_ids={author}")
    return [r for r in found["items"] if r["body"] == body]


async def add_review(session: aiohttp.ClientSession, gateway: Gateway, user: str,
                     body: str, key: str | None, rating: int = 4) -> Answer:
    review: dict[str, Any] = {"productId": "p7", "rating": rating, "body": body}
    if key is not None:
        review["idempotencyKey"] = key
    return await call(session, gateway, ADD_REVIEW, {"input": review},
                      token=token(user, WRITER))


def review_of(answer: Answer) -> dict[str, Any]:
    assert answer.status == 200 and "errors" not in answer.body, answer.body
    payload = answer.body["data"]["addReview"]
    assert payload["errors"] == [], payload
    review: dict[str, Any] = payload["review"]
    return review


async def test_a_repeated_key_answers_the_first_review_and_writes_nothing_more(
        prod: Gateway, sservices: Services) -> None:
    sservices.reset_stats()
    text, key = f"Sturdy, {uuid.uuid4()}", str(uuid.uuid4())
    async with aiohttp.ClientSession() as session:
        first = review_of(await add_review(session, prod, "u5", text, key))
        again = review_of(await add_review(session, prod, "u5", text, key))
        assert again == first
        # The same key with another review: refused, nothing written.
        other = await add_review(session, prod, "u5", text + " (edited)", key, rating=2)
        assert other.body["data"]["addReview"] == {"review": None, "errors": [
            {"code": "IDEMPOTENCY_CONFLICT", "field": "idempotencyKey"}]}
    assert posted(sservices, "reviews", "POST /reviews") == 1
    assert [r["id"] for r in reviews_with(sservices, "u5", text)] == [first["id"]]
    assert reviews_with(sservices, "u5", text + " (edited)") == []


async def test_without_a_key_each_request_is_a_review(prod: Gateway,
                                                      sservices: Services) -> None:
    text = f"Twice on purpose, {uuid.uuid4()}"
    async with aiohttp.ClientSession() as session:
        ids = {review_of(await add_review(session, prod, "u5", text, None))["id"]
               for _ in range(2)}
    assert len(ids) == 2 and len(reviews_with(sservices, "u5", text)) == 2


async def test_two_concurrent_requests_with_one_key_write_one_review(
        prod: Gateway, sservices: Services) -> None:
    sservices.reset_stats()
    text, key = f"Sent twice at once, {uuid.uuid4()}", str(uuid.uuid4())
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(add_review(session, prod, "u8", text, key)
                                         for _ in range(2)))
    first, second = (review_of(a) for a in answers)
    assert first == second
    assert posted(sservices, "reviews", "POST /reviews") == 1
    assert len(reviews_with(sservices, "u8", text)) == 1


async def test_keys_are_the_callers_own(prod: Gateway, sservices: Services) -> None:
    """u5's key never conflicts with u6's, nor tells u6 that u5 used it: both mutations."""
    key = str(uuid.uuid4())
    text = f"Same key, two people, {uuid.uuid4()}"
    async with aiohttp.ClientSession() as session:
        mine = review_of(await add_review(session, prod, "u5", text, key))
        theirs = review_of(await add_review(session, prod, "u6", text, key))
        assert mine["id"] != theirs["id"]
        orders = []
        for user in ("u5", "u6"):
            answer = await call(session, prod, PLACE_ORDER, {"input": {
                "items": [{"productId": "p3", "quantity": 1}], "idempotencyKey": key}},
                token=token(user, WRITER))
            assert answer.body["data"]["placeOrder"]["errors"] == [], answer.body
            orders.append(answer.body["data"]["placeOrder"]["order"]["id"])
    assert len(reviews_with(sservices, "u5", text)) == 1
    assert len(reviews_with(sservices, "u6", text)) == 1
    assert orders[0] != orders[1]


async def test_a_write_whose_answer_was_lost_is_found_not_written_again(
        prod: Gateway, sservices: Services) -> None:
    """The service wrote the review but its answer did not arrive (the body cut in half):
    the client gets UPSTREAM_OUTCOME_UNKNOWN, and sending it again with the same key answers
    the review that was written instead of writing another."""
    text, key = f"Lost answer, {uuid.uuid4()}", str(uuid.uuid4())
    with sservices.cleaned():
        sservices.set_faults("reviews", bad_body_rate=1.0, bad_body="truncated")
        async with aiohttp.ClientSession() as session:
            lost = await add_review(session, prod, "u9", text, key)
            assert lost.codes() == ["UPSTREAM_OUTCOME_UNKNOWN"], lost.body
            sservices.clear_faults()
            again = review_of(await add_review(session, prod, "u9", text, key))
        [written] = reviews_with(sservices, "u9", text)
        assert again["id"] == written["id"]
        assert posted(sservices, "reviews", "POST /reviews") == 1


async def test_a_write_that_was_not_made_is_made_by_the_repeat(
        prod: Gateway, sservices: Services) -> None:
    text, key = f"Refused first, {uuid.uuid4()}", str(uuid.uuid4())
    with sservices.cleaned():
        sservices.set_faults("reviews", error_rate=1.0, error_status=503)
        async with aiohttp.ClientSession() as session:
            failed = await add_review(session, prod, "u9", text, key)
            assert failed.codes() and "errors" in failed.body
            sservices.clear_faults()
            again = review_of(await add_review(session, prod, "u9", text, key))
    assert [r["id"] for r in reviews_with(sservices, "u9", text)] == [again["id"]]


@pytest.fixture
def replicas(start: Callable[..., Gateway], redis_url: str) -> tuple[Gateway, Gateway]:
    """Two replicas sharing a Redis (a prefix of their own)."""
    prefix = f"idem-{uuid.uuid4().hex[:8]}"
    return (start(REDIS_URL=redis_url, REDIS_PREFIX=prefix),
            start(REDIS_URL=redis_url, REDIS_PREFIX=prefix))


async def test_replicas_sharing_redis_write_a_keyed_review_once(
        replicas: tuple[Gateway, Gateway], sservices: Services) -> None:
    one, two = replicas
    sservices.reset_stats()
    async with aiohttp.ClientSession() as session:
        text, key = f"Through both, {uuid.uuid4()}", str(uuid.uuid4())
        first = review_of(await add_review(session, one, "u11", text, key))
        assert review_of(await add_review(session, two, "u11", text, key)) == first
        conflict = await add_review(session, two, "u11", text + "!", key)
        assert conflict.body["data"]["addReview"]["errors"][0]["code"] == "IDEMPOTENCY_CONFLICT"
        # At once, one on each replica.
        text, key = f"Both at once, {uuid.uuid4()}", str(uuid.uuid4())
        answers = await asyncio.gather(add_review(session, one, "u11", text, key),
                                       add_review(session, two, "u11", text, key))
        assert review_of(answers[0]) == review_of(answers[1])
    assert posted(sservices, "reviews", "POST /reviews") == 2
    assert len(reviews_with(sservices, "u11", text)) == 1
