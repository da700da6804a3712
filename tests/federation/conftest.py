"""The gateway as an Apollo Federation subgraph (FEDERATION_SUBGRAPH): reference services,
gateways with the setting on, and, for composition, a second subgraph and Apollo Gateway
run with Node.js from npm's packages (package.json)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.process import die_with_parent
from tests.harness import ROOT, Gateway, Process, Services, free_port, gateways, running_services

HERE = Path(__file__).parent


@pytest.fixture(scope="package")
def ftmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("federation")


@pytest.fixture(scope="package")
def fservices(ftmp: Path) -> Iterator[Services]:
    with running_services(ftmp) as svc:
        yield svc


@pytest.fixture(scope="package")
def start(ftmp: Path, fservices: Services) -> Iterator[Callable[..., Gateway]]:
    # The entity cache off: every lookup reaches its service, so the services' /_stats count
    # the batches exactly whatever ran before (with it on, a cached entity costs no call).
    with gateways(ftmp, fservices, FEDERATION_SUBGRAPH="true",
                  CACHE_ENABLED="false") as start_:
        yield start_


@pytest.fixture(scope="package")
def subgraph(start: Callable[..., Gateway]) -> Gateway:
    """The gateway as a subgraph, with the plan executor (the default)."""
    return start()


class NodeServer:
    """A Node.js server script of this folder on a free port, up once it prints "ready"."""

    def __init__(self, node: str, script: str, args: list[str], tmp: Path) -> None:
        self.port = free_port()
        log_path = tmp / f"{Path(script).stem}-{self.port}.log"
        log = log_path.open("wb")
        proc = subprocess.Popen([node, str(HERE / script), str(self.port), *args], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=die_with_parent)
        self.process = Process(proc=proc, env={}, log_path=log_path)
        deadline = time.monotonic() + 60
        while "ready" not in self.process.log():
            if proc.poll() is not None or time.monotonic() > deadline:
                self.process.stop()
                raise RuntimeError(f"{script} did not start:\n{self.process.log()}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.process.stop()
