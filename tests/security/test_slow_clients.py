"""Slow and vanishing clients (issue 17, finding 1): a connection that sends part of its
headers or part of its body is answered 408 and closed after its timeout, an idle one is
closed, the connections a process serves are capped with an early 503, and a client that
leaves mid-body is its own outcome in the metrics and an info line in the log, never a 500.

The timeouts are set small here; each probe waits for what the gateway does (an answer, a
close), with a generous bound only against a hang."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from tests.harness import Gateway, metric_total
from tests.security.rawhttp import Conn, graphql_request, request

SLOW = {"HEADER_TIMEOUT_S": "1", "BODY_TIMEOUT_S": "1", "KEEPALIVE_TIMEOUT_S": "1"}


@pytest.fixture(scope="module")
def slow(start: Callable[..., Gateway]) -> Gateway:
    return start(**SLOW)


def aborted(gateway: Gateway, reason: str) -> float:
    return metric_total(gateway.url, "gateway_http_aborted_total", reason=reason)


def requests(gateway: Gateway, outcome: str) -> float:
    return metric_total(gateway.url, "gateway_requests_total", outcome=outcome)


def log_lines(gateway: Gateway) -> list[dict[str, object]]:
    lines = []
    for line in gateway.process.log().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


async def wait_for(condition: Callable[[], bool], guard_s: float = 30.0) -> None:
    """Until `condition` holds (polled: it reads the gateway's /metrics); a hang guard."""
    for _ in range(int(guard_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the gateway never got there")


async def test_a_client_sending_its_headers_slowly_gets_408_and_is_closed(slow: Gateway) -> None:
    before = aborted(slow, "header_timeout")
    conn = await Conn.open(slow)
    start_ = b"POST /graphql HTTP/1.1\r\nHost: gateway\r\n"
    await conn.send(start_)
    # A header trickled a byte every 0.2 s: each byte arrives well within any idle timeout,
    # and the whole would take 20 s. The timeout counts from the request's first byte.
    rest = b"X-Slow: " + b"a" * 100 + b"\r\n\r\n"
    trickle = asyncio.create_task(conn.trickle(rest))
    reply = await conn.reply()
    assert conn.sent < len(start_) + len(rest)  # closed before the headers were through
    trickle.cancel()
    assert reply.status == 408 and reply.closed
    assert reply.body["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
    assert aborted(slow, "header_timeout") == before + 1


async def test_a_connection_that_sends_nothing_is_closed_silently(slow: Gateway) -> None:
    conn = await Conn.open(slow)
    reply = await conn.reply()
    assert reply.closed and reply.raw == b""


async def test_an_idle_keep_alive_connection_is_closed(slow: Gateway) -> None:
    conn = await Conn.open(slow)
    await conn.send(graphql_request())
    first = await conn.response()
    assert first.status == 200 and "close" not in first.headers.get("connection", "")
    reply = await conn.reply()  # nothing more sent: KEEPALIVE_TIMEOUT_S closes it
    assert reply.closed and reply.raw == b""


async def test_a_client_sending_its_body_slowly_gets_408_and_no_500(slow: Gateway) -> None:
    before = aborted(slow, "body_timeout"), requests(slow, "aborted")
    conn = await Conn.open(slow)
    await conn.send(request("POST", "/graphql", {"Content-Type": "application/json",
                                                 "Content-Length": "100"}) + b"{")
    trickle = asyncio.create_task(conn.trickle(b" " * 99))
    reply = await conn.reply()
    trickle.cancel()
    assert reply.status == 408 and reply.closed
    assert reply.body["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
    await wait_for(lambda: requests(slow, "aborted") == before[1] + 1)
    assert aborted(slow, "body_timeout") == before[0] + 1
    assert requests(slow, "error") == 0
    assert not [line for line in log_lines(slow) if line["level"] in ("error", "critical")]


async def test_a_client_leaving_mid_body_is_counted_and_logged_as_the_clients_doing(
    start: Callable[..., Gateway]
) -> None:
    gateway = start()
    for path in ("/graphql", "/events"):
        conn = await Conn.open(gateway)
        await conn.send(request("POST", path, {
            "Content-Type": "application/json", "Content-Length": "100",
            "X-Signature": "sha256=" + "0" * 64}) + b'{"query": ')
        conn.close()
    await wait_for(lambda: aborted(gateway, "client_disconnect") == 2)
    # /graphql's own outcome (gateway_requests_total counts GraphQL requests only).
    assert requests(gateway, "aborted") == 1
    assert requests(gateway, "error") == 0
    lines = log_lines(gateway)
    assert not [line for line in lines if line["level"] in ("error", "critical")], lines
    assert not [line for line in lines if "Traceback" in json.dumps(line)]
    abandoned = [line for line in lines if line.get("reason") == "client_disconnect"
                 and line["logger"] == "gateway"]
    assert [(line["level"], line["path"]) for line in abandoned] == [
        ("info", "/graphql"), ("info", "/events")]
    access = [line for line in lines if line["logger"] == "gateway.access"
              and line.get("outcome") == "aborted"]
    assert [line["status"] for line in access] == [499]


async def test_beyond_max_connections_a_request_gets_503_at_once_and_traffic_resumes(
    start: Callable[..., Gateway]
) -> None:
    gateway = start(MAX_CONNECTIONS="4", HEADER_TIMEOUT_S="3")
    events: list[str] = []
    slow = [await Conn.open(gateway) for _ in range(4)]
    for conn in slow:
        await conn.send(b"GET /graphql HTTP/1.1\r\nHost: gateway\r\n")  # never finished

    async def held(conn: Conn) -> None:
        reply = await conn.reply()
        assert reply.status == 408
        events.append("slow closed")

    waiting = [asyncio.create_task(held(conn)) for conn in slow]
    await asyncio.sleep(0.2)  # (the four are in; nothing is asserted on this)
    conn = await Conn.open(gateway)
    await conn.send(graphql_request())
    refused = await conn.reply()
    events.append(f"{refused.status}")
    assert refused.status == 503 and refused.closed
    assert refused.headers["retry-after"] == "1"
    assert refused.body["errors"][0]["extensions"]["code"] == "OVER_CAPACITY"
    await asyncio.gather(*waiting)
    # The refusal came at once, not after the slow connections had gone.
    assert events == ["503"] + ["slow closed"] * 4
    conn = await Conn.open(gateway)
    await conn.send(graphql_request())
    assert (await conn.response()).status == 200
    conn.close()
    assert aborted(gateway, "over_capacity") == 1
    assert aborted(gateway, "header_timeout") == 4
