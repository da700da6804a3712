"""The load generator counts what a client would: answers, GraphQL errors, partial answers
and failures, over keep-alive connections that it reopens when the server closes them."""

from __future__ import annotations

import asyncio
import itertools

import orjson
from aiohttp import web

from bench.loadgen import run
from tests.harness import free_port


async def test_loadgen_classifies_answers_and_survives_closed_connections() -> None:
    answers = itertools.cycle(["ok", "partial", "errors", "failed", "chunked", "close"])
    seen: list[dict[str, object]] = []

    async def graphql(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        kind = next(answers)
        if kind == "ok":
            return web.json_response({"data": {"errors": "a field named so is data"}})
        if kind == "partial":
            return web.json_response({"data": {"a": None}, "errors": [{"message": "x"}]})
        if kind == "errors":
            return web.json_response({"errors": [{"message": "x"}]})
        if kind == "failed":
            return web.json_response({"errors": [{"message": "x"}]}, status=500)
        if kind == "chunked":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b'{"data":')
            await response.write(b'{"a":1}}')
            await response.write_eof()
            return response
        return web.json_response({"data": {"a": 1}}, headers={"Connection": "close"})

    app = web.Application()
    app.router.add_post("/graphql", graphql)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        result = await run(f"http://127.0.0.1:{port}/graphql", "user_lookup", 1, 30,
                           max_requests=12, start_index=0)
    finally:
        await runner.cleanup()
    assert result["requests"] == 12
    assert result["failures"] == 2
    assert result["responses_with_errors"] == 4  # partial and errors-only, twice each
    assert result["partial_responses"] == 2
    assert result["next_index"] == 12
    # Each request carried its own variables, parsed by the server as JSON.
    assert [body["variables"] for body in seen] == [{"id": f"u{i + 1}"} for i in range(12)]
    assert orjson.dumps(seen[0]["query"])  # the workload's query text


async def test_loadgen_counts_a_refused_connection_as_a_failure() -> None:
    result = await run(f"http://127.0.0.1:{free_port()}/graphql", "user_lookup", 2, 0.3,
                       max_requests=None, start_index=0)
    assert result["requests"] == 0 and result["failures"] >= 2


async def test_loadgen_survives_a_server_that_closes_without_notice() -> None:
    # Each connection answers once with keep-alive, then is closed by the server.
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        body = b'{"data":{"a":1}}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await run(f"http://127.0.0.1:{port}/graphql", "user_lookup", 2, 1.0,
                           max_requests=None, start_index=0)
    finally:
        server.close()
        await server.wait_closed()
    assert result["requests"] > 2  # went on after each close, on new connections
    assert result["requests"] - result["failures"] > 2
