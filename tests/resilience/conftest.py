"""Gateways of their own for the resilience tests, against reference services of their own,
so that injected faults and breaker states cannot leak into other tests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import (
    Gateway,
    Services,
    gateways,
    http,
    metric_total,
    running_services,
)

DEBUG = {"X-Gateway-Debug": "1"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    elapsed: float

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The request's upstream calls, from the debug extension."""
        return self.body["extensions"]["debug"]["upstream"]

    def codes(self) -> list[str]:
        return [e["extensions"]["code"] for e in self.body.get("errors", ())]


Post = Callable[..., Awaitable[Reply]]


@pytest.fixture(scope="package")
def rtmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resilience")


@pytest.fixture(scope="package")
def rservices(rtmp: Path) -> Iterator[Services]:
    with running_services(rtmp) as svc:
        yield svc


@pytest.fixture
def faults(rservices: Services) -> Iterator[Services]:
    """The services with no faults and zeroed stats, restored after the test."""
    with rservices.cleaned() as clean:
        yield clean


@pytest.fixture(scope="package")
def start(rtmp: Path, rservices: Services) -> Iterator[Callable[..., Gateway]]:
    """Start a gateway with the given settings (the cache off unless asked for)."""
    with gateways(rtmp, rservices, CACHE_ENABLED="false") as start_:
        yield start_


@pytest.fixture
def post(http_session: aiohttp.ClientSession) -> Post:
    async def _post(gateway: Gateway, query: str, variables: dict[str, Any] | None = None,
                    headers: dict[str, str] | None = None) -> Reply:
        began = time.perf_counter()
        async with http_session.post(gateway.url + "/graphql",
                                json={"query": query, "variables": variables or {}},
                                headers={**DEBUG, **(headers or {})}) as resp:
            body = await resp.json(content_type=None)
            return Reply(resp.status, dict(resp.headers), body, time.perf_counter() - began)

    return _post


def readyz(gateway: Gateway) -> dict[str, Any]:
    return http("GET", gateway.url + "/readyz")[2]


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    """A sample of the gateway's /metrics, by name and labels (0 when absent)."""
    return metric_total(gateway.url, name, **labels)
