"""The clients client teams use, run against the gateway as they would be: npm packages run
with Node.js from the tests, Python's gql. Reference services and a gateway (the development
profile, as `make run` starts it) per package."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    DEVELOPMENT_PROFILE,
    ROOT,
    Gateway,
    Services,
    gateways,
    require,
    running_services,
)

NODE_MODULES = ROOT / "node_modules"


@pytest.fixture(scope="package")
def ctmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clients")


@pytest.fixture(scope="package")
def cservices(ctmp: Path) -> Iterator[Services]:
    with running_services(ctmp) as svc:
        yield svc


@pytest.fixture(scope="package")
def cgateway(ctmp: Path, cservices: Services) -> Iterator[Gateway]:
    with gateways(ctmp, cservices) as start:
        yield start(**DEVELOPMENT_PROFILE)  # as `make run` starts it, with the tests' tokens


def node_with(*packages: str) -> str:
    """The node binary, once the npm packages a script imports are installed (make assets)."""
    node = shutil.which("node")
    require(node is not None, "Node.js")
    for package in packages:
        require((NODE_MODULES / package).is_dir(), f"npm's {package} (make assets)")
    assert node is not None
    return node
