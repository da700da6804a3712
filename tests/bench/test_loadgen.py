"""The load generator counts what a client would: answers, GraphQL errors, partial answers
and failures, over keep-alive connections that it reopens when the server closes them."""

from __future__ import annotations

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
