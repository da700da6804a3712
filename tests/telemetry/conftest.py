"""Telemetry tests: reference services of their own, and gateways either in this process
(to read their spans from an in-memory exporter) or as processes (logs, metrics, OTLP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.types import ASGIApp

from app.config.settings import Settings
from app.http.app import create_app
from tests.conftest import QUERIES
from tests.harness import (
    Gateway,
    Services,
    free_port,
    gateways,
    running_services,
)

DEEP = (QUERIES / "deep.graphql").read_text()


@pytest.fixture(scope="package")
def ttmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("telemetry")


@pytest.fixture(scope="package")
def tservices(ttmp: Path) -> Iterator[Services]:
    with running_services(ttmp) as svc:
        yield svc


@pytest.fixture
def faults(tservices: Services) -> Iterator[Services]:
    with tservices.cleaned() as clean:
        yield clean


@dataclass
class InProcess:
    """A gateway running in the test's event loop, its spans in `exporter`."""

    url: str
    exporter: InMemorySpanExporter
    app: ASGIApp
    server: uvicorn.Server

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def launch(tservices: Services) -> AsyncIterator[Callable[..., Awaitable[InProcess]]]:
    """Start in-process gateways with the given settings; all stop at the package's end.
    Only async HTTP may reach them: a blocking call would stall the loop they run in."""
    running: list[tuple[InProcess, asyncio.Task[None]]] = []

    async def _launch(**env: str) -> InProcess:
        port = free_port()
        settings = Settings.from_env({
            **tservices.gateway_env(), "GATEWAY_PORT": str(port), "DEV_MODE": "true",
            "CACHE_ENABLED": "false", "BREAKER_ENABLED": "false",
            "RATE_LIMIT_ENABLED": "false", **env,
        })
        exporter = InMemorySpanExporter()
        app = create_app(settings, exporter)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               lifespan="on", log_level="warning",
                                               access_log=False))
        task = asyncio.create_task(server.serve())
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        gateway = InProcess(f"http://127.0.0.1:{port}", exporter, app, server)
        running.append((gateway, task))
        return gateway

    yield _launch
    for gateway, task in running:
        gateway.server.should_exit = True
        await task


@pytest.fixture(scope="package")
def processes(ttmp: Path, tservices: Services) -> Iterator[Callable[..., Gateway]]:
    with gateways(ttmp, tservices, CACHE_ENABLED="false") as start:
        yield start


async def post(session: aiohttp.ClientSession, url: str, query: str,
               headers: dict[str, str] | None = None,
               variables: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    async with session.post(url + "/graphql", json={"query": query, "variables": variables or {}},
                            headers=headers or {}) as resp:
        return resp.status, await resp.json(content_type=None)
