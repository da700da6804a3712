"""The upstream client's retry policy, on a FakeClock: retries that the service answers cost
no budget and a flaky service never trips the breaker, while a dead one exhausts the budget
and is cut off by the breaker; a Retry-After holds every retry to the service; a write is
repeated only with an idempotency key, or when it never went out; and a write that may have
been carried out is reported as UPSTREAM_OUTCOME_UNKNOWN, never as a failure.

In process: a small aiohttp server plays the upstream, answering from a script and noting
when (on the fake clock) each request arrived. Backoff and Retry-After waits run on the fake
clock, moved by `drive` to the next wake-up whenever a call sleeps; attempt timeouts are
aiohttp's, so the few that these tests need are short real ones (outcomes are asserted,
never durations)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from app.config.settings import Settings
from app.core.errors import Refused
from app.core.observer import Observer
from app.upstream.client import UpstreamClient
from app.upstream.failures import UpstreamError
from app.upstream.resilience import RetryBudget
from tests.fakeclock import FakeClock
from tests.harness import free_port

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Upstream:
    """A scripted service: each request is answered by the next step of its path's script
    (the last step repeats); `seen` notes (method, path, fake time, Idempotency-Key)."""

    url: str
    clock: FakeClock
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    seen: list[tuple[str, str, float, str | None]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a request came in

    def script(self, path: str, *steps: Answer) -> None:
        self.scripts[path] = list(steps)

    def count(self, path: str) -> int:
        return sum(1 for _, p, _, _ in self.seen if p == path)


def status(code: int, retry_after: int | None = None) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return web.json_response({"error": {"code": "X", "message": "scripted"}},
                                 status=code, headers=headers)
    return answer


def ok(body: Any = None, code: int = 200) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response({"items": []} if body is None else body, status=code)
    return answer


def refuse(code: int, upstream_code: str) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"code": upstream_code, "message": "no"}},
                                 status=code)
    return answer


def late(seconds: float, then: Answer) -> Answer:
    """Answer after `seconds` of real time: past the attempt timeouts set below."""
    async def answer(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await then(request)
    return answer


def html() -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>Bad Gateway</html>", content_type="text/html")
    return answer


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    clock = FakeClock()
    port = free_port()
    server = Upstream(f"http://127.0.0.1:{port}", clock)

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        server.seen.append((request.method, path, clock.monotonic(),
                            request.headers.get("Idempotency-Key")))
        server.arrived.set()
        steps = server.scripts[path]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        return await step(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield server
    finally:
        await runner.cleanup()


class Refusals(Observer):
    def __init__(self) -> None:
        self.refused = 0

    def retry_refused(self, service: str) -> None:
        self.refused += 1


def make_client(url: str, clock: FakeClock, observer: Observer | None = None,
                **overrides: Any) -> UpstreamClient:
    base = dict(users_url=url, orders_url=url, reviews_url=url,
                retry_budget_ratio=0.2, retry_budget_min_per_s=0.1, retry_budget_window_s=10,
                breaker_min_calls=5, breaker_failure_rate=0.5, breaker_window_s=60,
                breaker_open_s=30, upstream_timeout_s=0.1)
    settings = dataclasses.replace(Settings(), **{**base, **overrides})
    return UpstreamClient(settings, observer or Observer(), clock=clock)


async def drive(clock: FakeClock, *calls: Awaitable[Any]) -> list[Any]:
    """Run the calls; whenever one sleeps on the fake clock, move the clock to its wake-up.
    Each call's value, or the exception it raised."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    while not all(t.done() for t in tasks):
        await asyncio.sleep(0.002)  # real time: the server answers meanwhile
        wake = clock.next_wakeup()
        if wake is not None:
            clock.advance(max(0.0, wake - clock.monotonic()))
    return [t.exception() or t.result() for t in tasks]


async def with_client(upstream: Upstream, observer: Observer | None = None,
                      **overrides: Any) -> UpstreamClient:
    client = make_client(upstream.url, upstream.clock, observer, **overrides)
    await client.start()
    return client


def test_a_refunded_retry_leaves_the_budget_as_it_was() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=0.1, window_s=10, clock=clock)  # reserve: 1
    for _ in range(100):  # every call retried once, every retry answered
        budget.record_call()
        assert budget.try_spend()
        budget.refund()
    # Nothing spent: the reserve and 20% of 100 calls are all there for retries that fail.
    assert [budget.try_spend() for _ in range(22)] == [True] * 21 + [False]
    clock.advance(11)  # the window forgets calls, retries and refunds alike
    assert [budget.try_spend() for _ in range(2)] == [True, False]


async def test_a_flaky_service_whose_retries_work_keeps_its_budget_and_its_breaker(
    upstream: Upstream,
) -> None:
    # Every call's first attempt fails and its retry works: half of all attempts fail, at
    # the breaker's rate, and retries run at one per call, five times the budget's 20%.
    # Each retry is answered, so it is refunded: none is refused; and the breaker, which
    # counts calls after their retries, sees only successes.
    refusals = Refusals()
    client = await with_client(upstream, refusals)
    try:
        for _ in range(30):
            upstream.script("/users", status(503), ok())
            [body] = await drive(upstream.clock, client.request("users", "GET", "/users"))
            assert body == {"items": []}
    finally:
        await client.close()
    assert upstream.count("/users") == 60
    assert refusals.refused == 0
    assert client.guards["users"].state == "closed"


async def test_a_dead_service_spends_its_budget_then_the_breaker_cuts_it_off(
    upstream: Upstream,
) -> None:
    # Every attempt fails. The budget grants its reserve (1) and 20% of the calls in
    # retries, then refuses: call 1 retries once (1 <= 1 + 0.2), calls 2 to 4 not, call 5
    # once (2 <= 1 + 1.0). Five failed calls open the breaker (BREAKER_MIN_CALLS=5): from
    # the sixth call on, nothing reaches the service and each fails with CIRCUIT_OPEN.
    refusals = Refusals()
    client = await with_client(upstream, refusals)
    upstream.script("/users", status(503))
    try:
        errors = []
        for _ in range(30):
            [err] = await drive(upstream.clock, client.request("users", "GET", "/users"))
            errors.append(err)
    finally:
        await client.close()
    assert all(isinstance(e, UpstreamError) for e in errors)
    assert [e.code for e in errors[:5]] == ["UPSTREAM_UNAVAILABLE"] * 5
    assert [e.extensions["retries"] for e in errors[:5]] == [1, 0, 0, 0, 1]
    assert {e.code for e in errors[5:]} == {"CIRCUIT_OPEN"}
    assert upstream.count("/users") == 7
    assert refusals.refused == 5
    assert client.guards["users"].state == "open"


async def test_a_retry_after_holds_every_retry_to_the_service(upstream: Upstream) -> None:
    # Call A is answered 429 with Retry-After: 2. Call B, after it, meets a 503 whose own
    # backoff would be milliseconds: its retry waits out A's Retry-After all the same, and
    # so does A's. Both retries reach the service only 2 s (fake) after the 429.
    upstream.script("/users", status(429, retry_after=2), status(503), ok())
    client = await with_client(upstream, retry_budget_min_per_s=10)
    clock = upstream.clock
    try:
        first = asyncio.ensure_future(client.request("users", "GET", "/users"))
        await upstream.arrived.wait()
        limited_at = upstream.seen[0][2]
        results = await drive(clock, first, client.request("users", "GET", "/users"))
    finally:
        await client.close()
    assert results == [{"items": []}, {"items": []}]
    arrivals = [t for _, _, t, _ in upstream.seen]
    assert len(arrivals) == 4
    assert arrivals[1] < limited_at + 2  # B's first attempt: not a retry, not held
    assert all(t >= limited_at + 2 for t in arrivals[2:])  # both retries: held


async def test_a_write_without_a_key_is_not_sent_twice(upstream: Upstream) -> None:
    client = await with_client(upstream)
    try:
        # A 503 says the service did not take the work on: a failure, not retried (the
        # request went out).
        upstream.script("/reviews", status(503))
        [err] = await drive(upstream.clock, client.request("reviews", "POST", "/reviews",
                                                           json={}))
        assert isinstance(err, UpstreamError) and err.code == "UPSTREAM_UNAVAILABLE"
        assert err.extensions["retries"] == 0 and upstream.count("/reviews") == 1
        # No answer in time after it went out: it may have been carried out. Not retried,
        # and reported as unknown, not retryable, with its cause.
        upstream.script("/reviews", late(0.3, ok({"id": "r1"}, 201)))
        [err] = await drive(upstream.clock, client.request("reviews", "POST", "/reviews",
                                                           json={}))
        assert isinstance(err, UpstreamError) and err.code == "UPSTREAM_OUTCOME_UNKNOWN"
        assert err.extensions == {"service": "reviews", "retryable": False,
                                  "cause": "UPSTREAM_TIMEOUT", "retries": 0}
        assert "reviews did not answer in time" in str(err)
        assert upstream.count("/reviews") == 2
        # A 500, or a 200 that is not JSON (a proxy's page, or the service's own answer cut
        # short), does not say the work was not done either.
        for answer, cause in ((status(500), "UPSTREAM_UNAVAILABLE"),
                              (html(), "UPSTREAM_BAD_RESPONSE")):
            upstream.script("/reviews", answer)
            [err] = await drive(upstream.clock, client.request("reviews", "POST", "/reviews",
                                                               json={}))
            assert isinstance(err, UpstreamError) and err.code == "UPSTREAM_OUTCOME_UNKNOWN"
            assert err.extensions["cause"] == cause
        assert upstream.count("/reviews") == 4
    finally:
        await client.close()


async def test_a_write_that_never_went_out_may_be_retried() -> None:
    # Nothing listens on the port: every connection is refused before a byte is sent, so
    # even a write without an idempotency key is retried, and its failure is a plain one
    # (nothing can have been written).
    clock = FakeClock()
    client = make_client(f"http://127.0.0.1:{free_port()}", clock, breaker_enabled=False,
                         retry_budget_min_per_s=10, retry_max_attempts=3)
    await client.start()
    try:
        [err] = await drive(clock, client.request("reviews", "POST", "/reviews", json={}))
    finally:
        await client.close()
    assert isinstance(err, UpstreamError) and err.code == "UPSTREAM_UNAVAILABLE"
    assert err.extensions["retries"] == 2


async def test_a_keyed_write_is_retried_with_its_key_and_settled_by_the_answer(
    upstream: Upstream,
) -> None:
    key = {"Idempotency-Key": "k1"}
    client = await with_client(upstream, retry_budget_min_per_s=10)
    try:
        # The first attempt times out, the retry (same key) is answered: the order.
        upstream.script("/orders", late(0.3, ok({"id": "o1"}, 201)), ok({"id": "o1"}))
        [order] = await drive(upstream.clock, client.request("orders", "POST", "/orders",
                                                             json={}, headers=key))
        assert order == {"id": "o1"}
        assert [k for _, p, _, k in upstream.seen if p == "/orders"] == ["k1", "k1"]
        # Every attempt times out: unknown, and retryable (with the same key).
        upstream.seen.clear()
        upstream.script("/orders", late(0.3, ok({"id": "o2"}, 201)))
        [err] = await drive(upstream.clock, client.request(
            "orders", "POST", "/orders", json={}, headers=key))
        assert isinstance(err, UpstreamError) and err.code == "UPSTREAM_OUTCOME_UNKNOWN"
        assert err.extensions["retryable"] is True
        assert err.extensions["retries"] == upstream.count("/orders") - 1 > 0
        # A refusal of the retry settles it: had the first attempt been carried out, the
        # service would have answered its order again.
        upstream.script("/orders", late(0.3, ok()), refuse(409, "INSUFFICIENT_STOCK"))
        [refused] = await drive(upstream.clock, client.request(
            "orders", "POST", "/orders", json={}, headers=key,
            refusals={"INSUFFICIENT_STOCK": ("INSUFFICIENT_STOCK", "items")}))
        assert isinstance(refused, Refused) and refused.code == "INSUFFICIENT_STOCK"
    finally:
        await client.close()


async def test_a_read_is_never_of_unknown_outcome(upstream: Upstream) -> None:
    # A read sent by POST (its keys in the body) times out: retried, and a timeout.
    upstream.script("/inventory", late(0.3, ok()))
    client = await with_client(upstream, retry_max_attempts=2)
    try:
        [err] = await drive(upstream.clock, client.request("users", "POST", "/inventory",
                                                           json={}, read=True))
    finally:
        await client.close()
    assert isinstance(err, UpstreamError) and err.code == "UPSTREAM_TIMEOUT"
    assert err.extensions["retries"] == 1 and upstream.count("/inventory") == 2


async def test_a_failed_call_leaves_no_reference_cycle(upstream: Upstream) -> None:
    """A call's error, once its caller drops it, is freed at once: not kept (with the call's
    frame) until the cycle collector runs, which the gateway runs rarely (bench/RESULTS.md,
    Soak: the placeOrder refusals held that way grew the heap)."""
    upstream.script("/orders", refuse(409, "INSUFFICIENT_STOCK"))  # a refused write
    upstream.script("/inventory", status(503))  # a read, retried, then given up
    client = await with_client(upstream, retry_max_attempts=2)
    gc.collect()
    gc.disable()
    try:
        for call in (client.request("orders", "POST", "/orders", json={}),
                     client.request("users", "GET", "/inventory")):
            results = await drive(upstream.clock, call)
            assert isinstance(results[0], UpstreamError)
            held = weakref.ref(results[0])
            del results, call
            assert held() is None
    finally:
        gc.enable()
        await client.close()
