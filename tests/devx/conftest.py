"""Developer experience: gateways of this package's own, a real browser, and Node tools
(each test asks for its tool with tests.harness.require)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    DEVELOPMENT_PROFILE,
    ROOT,
    Gateway,
    Services,
    gateways,
    http,
    running_services,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NODE_MODULES = ROOT / "node_modules"


@pytest.fixture(scope="package")
def dtmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("devx")


@pytest.fixture(scope="package")
def dservices(dtmp: Path) -> Iterator[Services]:
    with running_services(dtmp) as svc:
        yield svc


@pytest.fixture(scope="package")
def start(dtmp: Path, dservices: Services) -> Iterator[Callable[..., Gateway]]:
    with gateways(dtmp, dservices) as start_:
        yield start_


@pytest.fixture(scope="package")
def gateway(start: Callable[..., Gateway]) -> Gateway:
    """A gateway as `make run` starts it (with the tests' tokens: DEVELOPMENT_PROFILE)."""
    return start(**DEVELOPMENT_PROFILE)


def ask(gateway: Gateway, query: str, variables: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """POST one GraphQL request: the status, the headers (lower-case names), the body."""
    status, answered, body = http("POST", gateway.url + "/graphql",
                                  {"query": query, "variables": variables or {}}, headers)
    return status, {k.lower(): v for k, v in answered.items()}, body
