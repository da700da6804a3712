"""Fixtures for the reference services' tests: one shared process on free ports, a webhook
receiver for change events, and helpers that talk real HTTP."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from services.seed import Dataset, generate
from tests.harness import EVENT_SECRET, Services, free_port, start_services


@dataclass
class Received:
    headers: dict[str, str]
    raw: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(orjson.loads(self.raw))

    def signature_ok(self) -> bool:
        expected = "sha256=" + hmac.new(EVENT_SECRET.encode(), self.raw,
                                        hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-signature", ""), expected)


@dataclass
class Receiver:
    """Collects webhook POSTs; runs in a thread so it answers while a test blocks."""

    url: str
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self, type_: str, id_: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received
                    if r.event["type"] == type_ and r.event["id"] == id_]

    def wait_for(self, type_: str, id_: str, count: int = 1,
                 timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(type_, id_)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"expected {count} {type_} event(s) for {id_}, "
                             f"got {self.events(type_, id_)}")


def _start_receiver() -> tuple[Receiver, ThreadingHTTPServer]:
    port = free_port()
    receiver = Receiver(url=f"http://127.0.0.1:{port}/events")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                receiver.received.append(
                    Received({k.lower(): v for k, v in self.headers.items()}, raw))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    recv, server = _start_receiver()
    yield recv
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def svc(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Services]:
    services = start_services(tmp_path_factory.mktemp("services"), webhooks=[receiver.url])
    yield services
    services.stop()


@pytest.fixture(scope="session")
def seed_data() -> Dataset:
    return generate(42, 1.0)


@pytest.fixture
def clean_faults(svc: Services) -> Iterator[Services]:
    """For tests that inject faults: whatever happens, the next test sees none."""
    yield svc
    svc.clear_faults()


@pytest.fixture(scope="session")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        # Idle connections go before any server's keep-alive closes them under our feet.
        connector=aiohttp.TCPConnector(keepalive_timeout=2)
    ) as s:
        yield s


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


Call = Callable[..., Any]


@pytest.fixture
def call(session: aiohttp.ClientSession) -> Call:
    async def _call(method: str, url: str, body: Any = None, raw: bytes | None = None,
                    headers: dict[str, str] | None = None, wait_s: float = 10.0) -> Reply:
        data = raw if raw is not None else orjson.dumps(body) if body is not None else None
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        async with session.request(method, url, data=data, headers=hdrs,
                                   timeout=aiohttp.ClientTimeout(total=wait_s)) as resp:
            content = await resp.read()
            return Reply(resp.status, dict(resp.headers),
                         orjson.loads(content) if content else None)

    return _call


_counter = itertools.count(1)


@pytest.fixture
def fresh(seed_data: Dataset) -> Callable[[str], str]:
    """Unique values for tests that write: idempotency keys, and products (with stock) and
    users that no other test writes to."""
    in_stock = [p for p, doc in seed_data.products.items()
                if seed_data.stock[doc["sku"]]["quantity"] >= 20]
    users = list(seed_data.users)

    def _fresh(kind: str) -> str:
        n = next(_counter)
        if kind == "product":
            return in_stock[-n]  # from the end, away from ids the read tests name
        if kind == "user":
            return users[-n]
        return f"{kind}-{time.time_ns()}-{n}"

    return _fresh


def service_tmp(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir(exist_ok=True)
    return path
