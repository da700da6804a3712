"""The observer hooks (`app/core/observer.py`): the parts report what they do, in order, to
whatever observer they are given, and run unobserved without one. In process: a small
aiohttp server plays a flaky upstream."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import pytest
from aiohttp import web

from app.cache.entity import EntityCache
from app.cache.hints import CacheHints
from app.config.settings import Settings
from app.core.observer import CallObservation, Observer
from app.upstream.client import UpstreamClient
from app.upstream.failures import UpstreamError
from loaders import declarations
from loaders.entities import STALENESS
from loaders.registry import Loaders, namespaces
from schema import build_schema
from tests.harness import free_port


class Recorder(Observer):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def batch(self, loader: str, size: int) -> Any:
        events = self.events

        class Block:
            def __enter__(self) -> None:
                events.append(("batch", loader, size))

            def __exit__(self, *exc: object) -> None:
                events.append(("batch end", loader))

        return Block()

    def cache_read(self, entity: str, hits: int, misses: int, stale: int) -> None:
        self.events.append(("cache", entity, hits, misses, stale))

    def call(self, service: str, method: str, route: str) -> CallObservation:
        events = self.events

        class Call(CallObservation):
            def __enter__(self) -> CallObservation:
                events.append(("call", service, method, route))
                return self

            def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                         tb: TracebackType | None) -> None:
                events.append(("call exit", kind.__name__ if kind else None))

            def attempt(self, number: int) -> None:
                events.append(("attempt", number))

            def retry(self, attempt: int, code: str, wait_s: float) -> None:
                events.append(("retry", attempt, code))

            def end(self, retries: int, code: str | None, message: str = "") -> None:
                events.append(("end", retries, code))

        return Call()

    def breaker_changed(self, service: str, state: int, opened: bool) -> None:
        self.events.append(("breaker", service, state, opened))


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """Answers /users with 503 for the first `fail` requests, then the users asked for."""
    state = {"fail": 0, "seen": 0}

    async def users(request: web.Request) -> web.Response:
        state["seen"] += 1
        if state["fail"] > 0:
            state["fail"] -= 1
            return web.json_response({"error": {"code": "UNAVAILABLE"}}, status=503)
        ids = request.query["ids"].split(",")
        return web.json_response({"items": [{"id": i, "name": i} for i in ids]})

    app = web.Application()
    app.router.add_get("/users", users)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        await runner.cleanup()


def settings(url: str) -> Settings:
    return dataclasses.replace(Settings(), users_url=url, retry_base_s=0.001,
                               retry_max_backoff_s=0.002, retry_budget_min_per_s=100)


async def test_a_call_reports_its_attempts_retries_and_end(upstream: Any) -> None:
    url, state = upstream
    recorder = Recorder()
    client = UpstreamClient(settings(url), recorder)
    await client.start()
    try:
        state["fail"] = 2
        body = await client.request("users", "GET", "/users", params={"ids": "u1"})
        assert body["items"] == [{"id": "u1", "name": "u1"}]
        state["fail"] = 10
        with pytest.raises(UpstreamError):
            await client.request("users", "GET", "/users", params={"ids": "u2"})
    finally:
        await client.close()
    calls = [e for e in recorder.events if e[0] != "breaker"]
    attempts = Settings().retry_max_attempts
    assert calls == [
        ("call", "users", "GET", "/users"),
        ("attempt", 1), ("retry", 2, "UPSTREAM_UNAVAILABLE"),
        ("attempt", 2), ("retry", 3, "UPSTREAM_UNAVAILABLE"),
        ("attempt", 3), ("end", 2, None), ("call exit", None),
        ("call", "users", "GET", "/users"),
        *[e for n in range(1, attempts) for e in
          (("attempt", n), ("retry", n + 1, "UPSTREAM_UNAVAILABLE"))],
        ("attempt", attempts), ("end", attempts - 1, "UPSTREAM_UNAVAILABLE"),
        ("call exit", "UpstreamError"),
    ]
    assert ("breaker", "users", 0, False) in recorder.events  # reported at start


async def test_a_batch_through_the_cache_reports_its_misses_then_its_hits(upstream: Any) -> None:
    url, state = upstream
    recorder = Recorder()
    client = UpstreamClient(settings(url))  # unobserved: it runs all the same
    await client.start()
    try:
        cache = EntityCache(CacheHints(build_schema().as_str()), max_entries=100,
                            staleness=STALENESS, observer=recorder)
        spaces = namespaces(cache, declarations.ALL)
        for _ in range(2):  # a request each
            loaders = Loaders(client, 4, cache, spaces, observer=recorder)
            users = await loaders.load_many(declarations.USER, ["u1", "u2", "u1"])
            assert [u["id"] for u in users] == ["u1", "u2", "u1"]
    finally:
        await client.close()
    assert state["seen"] == 1
    assert recorder.events == [
        ("batch", "user", 2), ("cache", "User", 0, 2, 0), ("batch end", "user"),
        ("batch", "user", 2), ("cache", "User", 2, 0, 0), ("batch end", "user"),
    ]
