"""Every header the gateway reads is parsed defensively (issue 17, findings 5 and 10): a value
it cannot use is a 400 (or the 401 of a bad token) with a code, never a 500; no redirect is
built from Host; media types match whatever their case."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from tests.harness import Gateway, metric_total
from tests.security.conftest import Answer, call
from tests.security.rawhttp import Conn, graphql_request, request

QUERY = "{ categories { id } }"


async def test_an_oversized_request_timeout_is_400_not_500(
    prod: Gateway, http_session: aiohttp.ClientSession
) -> None:
    errors = metric_total(prod.url, "gateway_requests_total", outcome="error")
    for value in ("9" * 400, "1" * 10, "0", "-1", "+5", "5_000", "1e3", "5.5", "٣", "0x10",
                  "abc"):
        answer = await call(http_session, prod, QUERY, headers={"X-Request-Timeout-Ms": value})
        assert answer.status == 400 and answer.codes() == ["BAD_USER_INPUT"], (value,
                                                                               answer.body)
        assert "X-Request-Timeout-Ms" in answer.body["errors"][0]["message"]
    for value in ("1500", "999999999"):
        answer = await call(http_session, prod, QUERY, headers={"X-Request-Timeout-Ms": value})
        assert answer.status == 200 and "errors" not in answer.body, answer.body
    assert metric_total(prod.url, "gateway_requests_total", outcome="error") == errors


async def test_headers_outside_ascii_are_400_not_500(prod: Gateway) -> None:
    conn = await Conn.open(prod)
    # ² is a digit to Python (str.isdigit), not a number to int().
    await conn.send(graphql_request().replace(b"Host: gateway\r\n",
                                              b"Host: gateway\r\nX-Request-Timeout-Ms: \xb2\r\n"))
    reply = await conn.response()
    conn.close()
    assert reply.status == 400
    assert reply.body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize("value", [
    "Bearer", "Bearer ", "Basic Zm9vOmJhcg==", "bearer a.b.c", "Bearer " + "a" * 5000,
    "Bearer eyJhbGciOiJub25lIn0.e30.", "Bearer W10.e30.x",  # alg none; a header that is a list
    "Bearer eyJhbGciOlsiSFMyNTYiXX0.e30.x",  # alg is a list
])
async def test_bad_authorization_headers_are_401(
    prod: Gateway, http_session: aiohttp.ClientSession, value: str
) -> None:
    answer = await call(http_session, prod, QUERY, headers={"Authorization": value})
    assert answer.status == 401 and answer.codes() == ["UNAUTHENTICATED"], answer.body


async def test_the_development_user_header_must_be_a_user_id(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    dev = start(DEV_MODE="true")
    ok = await call(http_session, dev, "{ me { id } }", headers={"X-User-Id": "u1"})
    assert ok.status == 200 and ok.body["data"]["me"]["id"] == "u1"
    for value in ("u1/../u2", "u1?x=1", "a" * 65, "u 1", "é"):
        answer = await call(http_session, dev, "{ me { id } }", headers={"X-User-Id": value})
        assert answer.status == 400 and answer.codes() == ["BAD_USER_INPUT"], (value,
                                                                               answer.body)


@pytest.mark.parametrize("headers", [
    {"Accept": "application/graphql-response+json;q=abc, */*;q=nan"},
    {"Accept": ";;;,,, q=1e999"},
    {"traceparent": "00-zz-yy-01", "tracestate": "=" * 500},
    {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
    {"X-Gateway-Debug": "\u00e9" * 100},
])
async def test_odd_accept_trace_and_debug_headers_are_ignored(
    prod: Gateway, http_session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    answer = await call(http_session, prod, QUERY, headers=headers)
    assert answer.status == 200 and "errors" not in answer.body, answer.body


async def test_a_bad_content_length_is_400_and_the_gateway_goes_on(prod: Gateway) -> None:
    for value in (b"abc", b"-1", b"1, 2", b"\xb2"):
        conn = await Conn.open(prod)
        await conn.send(b"POST /graphql HTTP/1.1\r\nHost: gateway\r\n"
                        b"Content-Type: application/json\r\nContent-Length: " + value +
                        b"\r\n\r\n{}")
        reply = await conn.reply()
        assert reply.status == 400, (value, reply.raw)
    conn = await Conn.open(prod)
    await conn.send(graphql_request())
    assert (await conn.response()).status == 200


async def test_no_redirect_is_built_from_the_host_header(prod: Gateway) -> None:
    for path in ("/graphql/", "/healthz/", "/events/"):
        conn = await Conn.open(prod)
        await conn.send(request("GET", path).replace(b"Host: gateway", b"Host: evil.example"))
        reply = await conn.response()
        conn.close()
        assert reply.status == 404, reply.raw
        assert "location" not in reply.headers
        assert b"evil.example" not in reply.raw


@pytest.mark.parametrize("content_type", [
    "APPLICATION/JSON", "Application/Json; charset=UTF-8", "application/JSON ; charset=utf-8",
])
async def test_media_types_match_whatever_their_case(
    prod: Gateway, http_session: aiohttp.ClientSession, content_type: str
) -> None:
    async with http_session.post(prod.url + "/graphql", data=b'{"query": "{ categories { id } }"}',
                                 headers={"Content-Type": content_type,
                                          "Accept": "APPLICATION/GRAPHQL-RESPONSE+JSON"}) as resp:
        answer = Answer(resp.status, resp.headers.copy(), await resp.json(content_type=None))
    assert answer.status == 200 and answer.body["data"]["categories"], answer.body
    assert answer.headers["Content-Type"].startswith("application/graphql-response+json")
