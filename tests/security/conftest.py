"""Gateways in production mode (DEV_MODE off: no X-User-Id, no debug) against services of
their own, and a caller that speaks HTTP with any headers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from services.seed import Dataset, generate
from tests.harness import (
    Gateway,
    Services,
    gateways,
    running_services,
)


@pytest.fixture(scope="package")
def stmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security")


@pytest.fixture(scope="package")
def sservices(stmp: Path) -> Iterator[Services]:
    with running_services(stmp) as svc:
        yield svc


@pytest.fixture(scope="package")
def seed() -> Dataset:
    return generate()


@pytest.fixture(scope="package")
def start(stmp: Path, sservices: Services) -> Iterator[Callable[..., Gateway]]:
    with gateways(stmp, sservices, DEV_MODE="false") as start_:
        yield start_


@pytest.fixture(scope="package")
def prod(start: Callable[..., Gateway]) -> Gateway:
    """A production-mode gateway with the test HS256 secret (tests.harness.token)."""
    return start()


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]  # case-insensitive, as HTTP's are
    body: dict[str, Any]

    def codes(self) -> list[str]:
        return [e["extensions"]["code"] for e in self.body.get("errors") or ()]


async def call(session: aiohttp.ClientSession, gateway: Gateway, query: str,
               variables: dict[str, Any] | None = None, token: str | None = None,
               headers: dict[str, str] | None = None) -> Answer:
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    async with session.post(gateway.url + "/graphql",
                            json={"query": query, "variables": variables or {}},
                            headers=hdrs) as resp:
        return Answer(resp.status, CIMultiDict(resp.headers), await resp.json(content_type=None))
