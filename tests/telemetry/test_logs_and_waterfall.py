"""JSON logs that carry the trace, error responses that name it, and the waterfall a debug
caller gets back (and `python -m app trace` prints), from gateways run as processes."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import ROOT, Gateway, Services, token
from tests.telemetry.conftest import DEEP, post

REVIEWS = ('query Reviews { product(id: "p451") { id reviews(first: 3) '
           '{ id author { id name } } } }')
DEBUG = {"X-Gateway-Debug": "1"}


async def log_lines(gateway: Gateway, until: Callable[[list[dict[str, Any]]], bool]
                    ) -> list[dict[str, Any]]:
    """The gateway's JSON log lines, once `until` holds of them (lines are written async)."""
    lines: list[dict[str, Any]] = []
    for _ in range(100):
        lines = [json.loads(raw) for raw in gateway.process.log().splitlines()
                 if raw.startswith("{")]
        if until(lines):
            break
        await asyncio.sleep(0.05)
    return lines


async def test_log_lines_are_json_with_the_trace_of_the_error_the_client_saw(
    processes: Callable[..., Gateway], faults: Services, http_session: aiohttp.ClientSession
) -> None:
    gateway = processes(RETRY_BASE_S="0.001", RETRY_MAX_ATTEMPTS="3")
    faults.set_faults("users", error_rate=1.0, error_status=503)
    status, body = await post(http_session, gateway.url, REVIEWS, headers=DEBUG)
    assert status == 200 and body["data"]["product"]["id"] == "p451"
    [error] = body["errors"]
    trace_id = error["extensions"]["traceId"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert body["extensions"]["debug"]["traceId"] == trace_id

    lines = await log_lines(gateway, lambda ls: any(
        line.get("logger") == "gateway.access" for line in ls))
    for line in lines:
        assert {"time", "level", "logger", "message", "pid"} <= set(line)
    [access] = [line for line in lines if line.get("logger") == "gateway.access"]
    assert access["trace_id"] == trace_id and re.fullmatch(r"[0-9a-f]{16}", access["span_id"])
    assert access["level"] == "info" and access["message"] == "request"
    assert access["path"] == "/graphql" and access["status"] == 200
    assert access["operation"] == "Reviews" and access["outcome"] == "partial"
    assert access["upstream_calls"] == len(body["extensions"]["debug"]["upstream"]) == 3
    assert access["duration_ms"] > 0
    [logged] = [line for line in lines if line.get("code") == "UPSTREAM_UNAVAILABLE"]
    assert logged["level"] == "warning" and logged["trace_id"] == trace_id
    assert logged["operation"] == "Reviews" and logged["service"] == "users"
    assert logged["retries"] == 2


async def test_a_refused_request_names_its_trace_too(
    processes: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    gateway = processes()
    async with http_session.post(gateway.url + "/graphql", data=b"{oops",
                                 headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        body = await resp.json()
    trace_id = body["errors"][0]["extensions"]["traceId"]
    lines = await log_lines(gateway, lambda ls: any(
        line.get("logger") == "gateway.access" for line in ls))
    [access] = [line for line in lines if line.get("logger") == "gateway.access"]
    assert access["trace_id"] == trace_id and access["status"] == 400


async def test_without_an_exporter_the_callers_trace_is_continued(
    processes: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    """No exporter: a light server span (no HTTP attributes), still in the caller's trace,
    so the trace id in the caller's own logs finds this request's log lines."""
    gateway = processes()
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with http_session.post(
            gateway.url + "/graphql", json={"query": "{ nope }"},
            headers={"traceparent": f"00-{caller}-00f067aa0ba902b7-01"}) as resp:
        body = await resp.json()
    assert body["errors"][0]["extensions"]["traceId"] == caller
    async with http_session.post(gateway.url + "/graphql", json={"query": "{ nope }"}) as resp:
        own = (await resp.json())["errors"][0]["extensions"]["traceId"]
    assert len(own) == 32 and own not in (caller, "0" * 32)
    lines = await log_lines(gateway, lambda ls: sum(
        line.get("logger") == "gateway.access" for line in ls) >= 2)
    assert [line["trace_id"] for line in lines if line.get("logger") == "gateway.access"
            ][-2:] == [caller, own]


async def test_the_waterfall_times_every_resolver_with_its_calls_retries_and_errors(
    processes: Callable[..., Gateway], faults: Services, http_session: aiohttp.ClientSession
) -> None:
    # No exporter: the waterfall needs none, and the debug request is recorded all the same.
    gateway = processes(RETRY_BASE_S="0.001", RETRY_MAX_ATTEMPTS="3")
    status, body = await post(http_session, gateway.url, DEEP, headers=DEBUG)
    assert status == 200 and "errors" not in body
    debug = body["extensions"]["debug"]
    rows = debug["resolvers"]
    authors = [r for r in rows if r["coordinate"] == "Review.author"]
    first = [r for p in body["data"]["topProducts"] for r in p["reviews"]]
    assert len([r for r in authors if r["path"].count(".") == 4]) == len(first)
    assert all(r["startMs"] >= 0 and r["durationMs"] >= 0 and r["error"] is None for r in rows)
    assert rows == sorted(rows, key=lambda r: (r["startMs"], r["path"]))
    # Every upstream call is under exactly one resolver: the one that started its batch.
    assert sum(r["calls"] for r in rows) == len(debug["upstream"]) > 0
    [top] = [r for r in rows if r["path"] == "topProducts"]
    assert top["calls"] == 1 and top["startMs"] <= min(r["startMs"] for r in rows)

    faults.set_faults("users", error_rate=1.0, error_status=503)
    _, body = await post(http_session, gateway.url, REVIEWS, headers=DEBUG)
    rows = body["extensions"]["debug"]["resolvers"]
    authors = [r for r in rows if r["coordinate"] == "Review.author"]
    assert authors and all(r["error"] == "UPSTREAM_UNAVAILABLE" for r in authors)
    assert sum(r["retries"] for r in authors) == 2
    [call] = [c for c in body["extensions"]["debug"]["upstream"] if c["service"] == "users"]
    assert call["retries"] == 2 and call["code"] == "UPSTREAM_UNAVAILABLE"


async def test_the_waterfall_is_for_authorized_callers_only_outside_development(
    processes: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    gateway = processes(DEV_MODE="false", DEBUG_TOKEN="s3cret-debug-token")
    query = "{ topProducts(first: 1) { id } }"
    for headers in ({}, DEBUG, {"X-Gateway-Debug": "s3cret-debug-tokeN"}):
        _, body = await post(http_session, gateway.url, query, headers=headers)
        assert "extensions" not in body, headers
    async with http_session.get(gateway.url + "/graphql", params={"query": query},
                                headers={"X-Gateway-Debug": "s3cret-debug-token"}) as resp:
        body = await resp.json()
        # The waterfall is its caller's: no shared cache may keep it (the query is PUBLIC).
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Vary"] == "Accept, x-gateway-debug"
    assert body["extensions"]["debug"]["resolvers"][0]["path"] == "topProducts"
    async with http_session.get(gateway.url + "/graphql", params={"query": query}) as resp:
        assert "public" in resp.headers["Cache-Control"] and resp.headers["Vary"] == "Accept"

    anonymous = processes(DEV_MODE="false")  # no token configured: nobody but an admin
    _, body = await post(http_session, anonymous.url, query, headers=DEBUG)
    assert "extensions" not in body
    customer = {**DEBUG, "Authorization": f"Bearer {token('u1', 'read:orders')}"}
    _, body = await post(http_session, anonymous.url, query, headers=customer)
    assert "extensions" not in body
    admin = {**DEBUG, "Authorization": f"Bearer {token('staff', 'admin')}"}
    _, body = await post(http_session, anonymous.url, query, headers=admin)
    assert body["extensions"]["debug"]["resolvers"][0]["path"] == "topProducts"


async def test_the_trace_command_prints_the_waterfall_with_the_slowest_path(
    processes: Callable[..., Gateway], faults: Services, tmp_path: Path
) -> None:
    gateway = processes()
    faults.set_faults("users", latency_ms=30)  # the authors are the slow part
    query_file = tmp_path / "deep.graphql"
    query_file.write_text(DEEP)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "trace", str(query_file), "--url",
        gateway.url + "/graphql", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    lines = text.splitlines()
    assert re.match(r"trace [0-9a-f]{32}: \d+ resolver calls, 10 upstream calls", lines[0])
    marked = [line for line in lines if line.startswith("> ")]
    assert marked[0].split()[1] == "topProducts"
    assert any(line.split()[1] == "author" for line in marked)
    slowest = next(line for line in lines if line.startswith("slowest path: "))
    assert slowest.split()[2].endswith(".author")
    # Waiting on users shows in its calls' durations.
    users = [line.split() for line in lines if line.startswith("  users /users")]
    assert len(users) == 2 and all(float(parts[3]) >= 30 for parts in users)
