"""Test hooks: /_stats per route template, /_faults injection and validation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.harness import SERVICE_NAMES, Services
from tests.services.conftest import Call
from tests.services.test_reads import assert_error

DEFAULT_FAULTS = {"latency_ms": 0, "jitter_ms": 0, "error_rate": 0.0, "error_status": 503,
                  "hang_rate": 0.0, "rate_limit_rps": None, "bad_body_rate": 0.0,
                  "bad_body": "html", "seed": None}


async def test_stats_per_route_template(svc: Services, call: Call) -> None:
    for name in SERVICE_NAMES:
        reset = await call("POST", svc.url(name) + "/_stats/reset")
        assert reset.status == 200
    await call("GET", svc.url("users") + "/users/u1")
    await call("GET", svc.url("users") + "/users/u2")
    await call("GET", svc.url("users") + "/users?ids=u1,u2,u2")
    await call("GET", svc.url("users") + "/users?ids=u5")
    await call("GET", svc.url("users") + "/nope")
    await call("GET", svc.url("users") + "/healthz")
    stats = (await call("GET", svc.url("users") + "/_stats")).body
    assert stats["requests"] == {"GET /users/{id}": 2, "GET /users": 2, "GET (unmatched)": 1}
    assert stats["items"] == {"GET /users": 4}

    await call("POST", svc.url("inventory") + "/inventory/query",
               {"skus": ["SKU-00001", "SKU-00002", "SKU-NOPE"]})
    await call("GET", svc.url("recommendations") + "/recommendations/u1?limit=3")
    await call("GET", svc.url("catalog") + "/products?category_id=c1&first=2")
    await call("GET", svc.url("catalog") + "/products?ids=p1,p2")
    assert svc.stats("inventory") == {"requests": {"POST /inventory/query": 1},
                                      "items": {"POST /inventory/query": 3}}
    assert svc.stats("recommendations")["requests"] == {"GET /recommendations/{user_id}": 1}
    assert svc.stats("catalog") == {"requests": {"GET /products": 2},
                                    "items": {"GET /products": 2}}
    # Orders' own calls to catalog and inventory count there too.
    svc.reset_stats()
    await call("POST", svc.url("orders") + "/orders/o99999999/cancel")
    assert svc.stats("orders")["requests"] == {"POST /orders/{id}/cancel": 1}
    assert (await call("POST", svc.url("orders") + "/_stats/reset")).body == {
        "requests": {}, "items": {}}
    assert svc.stats("orders") == {"requests": {}, "items": {}}


async def test_faults_defaults_and_partial_update(clean_faults: Services, call: Call) -> None:
    url = clean_faults.url("catalog") + "/_faults"
    assert (await call("GET", url)).body == DEFAULT_FAULTS
    reply = await call("PUT", url, {"latency_ms": 5})
    assert reply.status == 200 and reply.body == {**DEFAULT_FAULTS, "latency_ms": 5}
    reply = await call("PUT", url, {"error_status": 500})
    assert reply.body == {**DEFAULT_FAULTS, "latency_ms": 5, "error_status": 500}
    assert (await call("GET", url)).body == reply.body


@pytest.mark.parametrize("bad", [
    {"latency_ms": -1}, {"latency_ms": "5"}, {"jitter_ms": True}, {"error_rate": 1.5},
    {"error_rate": -0.1}, {"error_status": 200}, {"error_status": 503.0}, {"hang_rate": 2},
    {"rate_limit_rps": 0}, {"rate_limit_rps": "x"}, {"bad_body_rate": 2},
    {"bad_body": "xml"}, {"unknown": 1}, [1],
])
async def test_fault_validation(clean_faults: Services, call: Call, bad: Any) -> None:
    url = clean_faults.url("users") + "/_faults"
    assert_error(await call("PUT", url, bad), 400, "BAD_INPUT")
    assert (await call("GET", url)).body == DEFAULT_FAULTS


async def test_latency_and_jitter(clean_faults: Services, call: Call) -> None:
    clean_faults.set_faults("users", latency_ms=150, jitter_ms=50)
    start = time.perf_counter()
    reply = await call("GET", clean_faults.url("users") + "/users/u1")
    elapsed = time.perf_counter() - start
    assert reply.status == 200 and 0.15 <= elapsed < 0.5
    start = time.perf_counter()
    await call("GET", clean_faults.url("users") + "/_stats")  # hooks are never delayed
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize("status", [503, 500, 429])
async def test_error_rate(clean_faults: Services, call: Call, status: int) -> None:
    clean_faults.reset_stats()
    clean_faults.set_faults("catalog", error_rate=1.0, error_status=status)
    reply = await call("GET", clean_faults.url("catalog") + "/products?ids=p1")
    code = {503: "UNAVAILABLE", 500: "INTERNAL", 429: "RATE_LIMITED"}[status]
    assert_error(reply, status, code)
    if status == 429:
        assert int(reply.headers["Retry-After"]) >= 1
    # A refused request still reached the service.
    assert clean_faults.stats("catalog")["requests"] == {"GET /products": 1}


async def test_error_rate_share(clean_faults: Services, call: Call) -> None:
    clean_faults.set_faults("users", error_rate=0.5)
    replies = await asyncio.gather(
        *(call("GET", clean_faults.url("users") + "/users/u1") for _ in range(200)))
    failed = sum(r.status == 503 for r in replies)
    assert 50 < failed < 150


async def test_hang(clean_faults: Services, call: Call) -> None:
    clean_faults.set_faults("users", hang_rate=1.0)
    with pytest.raises(asyncio.TimeoutError):
        await call("GET", clean_faults.url("users") + "/users/u1", wait_s=0.5)
    hanging = asyncio.ensure_future(call("GET", clean_faults.url("users") + "/users/u2"))
    await asyncio.sleep(0.1)
    health = await call("GET", clean_faults.url("users") + "/healthz", wait_s=1)
    assert health.status == 200  # hanging requests do not block others
    assert (await call("GET", clean_faults.url("catalog") + "/products?ids=p1")).status == 200
    clean_faults.set_faults("users", hang_rate=0.0)
    assert not hanging.done()
    hanging.cancel()
    assert (await call("GET", clean_faults.url("users") + "/users/u1")).status == 200


async def test_rate_limit(clean_faults: Services, call: Call) -> None:
    clean_faults.set_faults("reviews", rate_limit_rps=5)
    url = clean_faults.url("reviews") + "/reviews?ids=r1"
    replies = [await call("GET", url) for _ in range(12)]
    statuses = [r.status for r in replies]
    assert statuses[:5] == [200] * 5 and 429 in statuses
    limited = next(r for r in replies if r.status == 429)
    assert limited.body["error"]["code"] == "RATE_LIMITED"
    assert int(limited.headers["Retry-After"]) >= 1
    await asyncio.sleep(0.5)  # tokens come back at 5 per second
    assert (await call("GET", url)).status == 200
    assert (await call("GET", clean_faults.url("reviews") + "/healthz")).status == 200


async def test_timing_counts_time_spent_answering_without_the_injected_latency(
    clean_faults: Services, call: Call
) -> None:
    url = clean_faults.url("catalog")
    await call("POST", url + "/_stats/reset")
    await call("PUT", url + "/_faults", {"latency_ms": 200})
    started = time.perf_counter()
    for _ in range(3):
        assert (await call("GET", url + "/products?ids=p1,p2")).status == 200
    took_ms = (time.perf_counter() - started) * 1000
    handling = (await call("GET", url + "/_timing")).body["handling_ms"]
    assert set(handling) == {"GET /products"}
    assert 0 < handling["GET /products"] < took_ms - 3 * 200  # the 600 ms of latency excluded
    await call("POST", url + "/_stats/reset")
    assert (await call("GET", url + "/_timing")).body == {"handling_ms": {}}
