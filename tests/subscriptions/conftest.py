"""Subscription tests: reference services whose change events go through a relay of ours
(it records them, so that a test can deliver one again, and forwards them to the gateways
it names), and gateways as processes:

- `memory`: the entity cache in process, no Redis;
- `nocache`: no entity cache (the hub hears events straight from /events): exact upstream
  counts;
- `a` and `b`: two replicas sharing Redis; only `a` receives the services' events, so
  what reaches `b`'s subscribers comes through Redis;
- `limited`: small limits (subscriptions per connection, connections per client, the
  connection_init timeout, the send buffer), no token leeway, fast keep-alives.

A test waits for its subscriptions to be active on the gateway (`wait_active`, from its
metrics) before it makes the change it expects to hear of.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from tests.harness import (
    Gateway,
    Services,
    local_server,
    sample_total,
    start_gateway,
    start_services,
    token,
)

PROTOCOLS = ["ws", "sse"]
SETTLE_S = 15.0  # hang guard for waits on the gateway's state


@dataclass
class Relay:
    """Receives the services' events, records them, forwards each to the target gateways
    (concurrently) and answers the service with the worst status among them."""

    targets: list[str] = field(default_factory=list)
    recorded: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {"X-Signature": request.headers.get("X-Signature", ""),
                   "Content-Type": "application/json"}
        self.recorded.append((body, headers))
        statuses = await asyncio.gather(*(self.deliver(url, body, headers)
                                          for url in self.targets))
        return web.Response(status=max(statuses, default=204))

    async def deliver(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        assert self.session is not None
        try:
            async with self.session.post(url + "/events", data=body, headers=headers) as resp:
                await resp.read()
                return resp.status
        except aiohttp.ClientError:
            return 502

    def events(self, type_: str, id_: str) -> list[tuple[dict[str, Any], bytes, dict[str, str]]]:
        import orjson

        found = []
        for body, headers in self.recorded:
            event = orjson.loads(body)
            if event["type"] == type_ and event["id"] == id_:
                found.append((event, body, headers))
        return found


@dataclass
class Stack:
    services: Services
    relay: Relay
    memory: Gateway
    nocache: Gateway
    a: Gateway
    b: Gateway
    tmp: Path
    extra: dict[str, Gateway] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str
                ) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("subscriptions")
    relay = Relay()
    app = web.Application()
    app.router.add_post("/events", relay.receive)
    async with aiohttp.ClientSession() as session, local_server(app) as relay_url:
        relay.session = session
        services = await asyncio.to_thread(start_services, tmp,
                                           webhooks=[relay_url + "/events"])
        shared = {"REDIS_URL": redis_url, "REDIS_PREFIX": f"sub-{uuid.uuid4().hex[:8]}"}
        started = await asyncio.gather(
            asyncio.to_thread(start_gateway, tmp, services),
            asyncio.to_thread(start_gateway, tmp, services, env={"CACHE_ENABLED": "false"}),
            asyncio.to_thread(start_gateway, tmp, services, env=shared),
            asyncio.to_thread(start_gateway, tmp, services, env=shared))
        memory, nocache, a, b = started
        relay.targets = [memory.url, nocache.url, a.url]
        stack = Stack(services, relay, memory, nocache, a, b, tmp)
        try:
            yield stack
        finally:
            for gateway in [*started, *stack.extra.values()]:
                gateway.stop()
            services.stop()


LIMITED = {
    "SUBSCRIPTIONS_PER_CONNECTION": "2",
    "SUBSCRIPTION_CONNECTIONS_PER_CLIENT": "2",
    "SUBSCRIPTION_INIT_TIMEOUT_S": "0.5",
    "SUBSCRIPTION_BUFFER_BYTES": "20000",
    "SUBSCRIPTION_KEEPALIVE_S": "0.2",
    "AUTH_LEEWAY_S": "0",
}


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def limited(stack: Stack) -> Gateway:
    gateway = await asyncio.to_thread(start_gateway, stack.tmp, stack.services, env=LIMITED)
    stack.extra["limited"] = gateway
    stack.relay.targets.append(gateway.url)
    return gateway


@pytest.fixture
def svc(stack: Stack) -> Iterator[Services]:
    """The stack's services with zeroed stats and no faults."""
    with stack.services.cleaned() as clean:
        yield clean


@pytest_asyncio.fixture(loop_scope="session")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def metrics(session: aiohttp.ClientSession, gateway: Gateway | str) -> str:
    """`gateway`'s /metrics (a process, or the base URL of one in this process)."""
    url = gateway if isinstance(gateway, str) else gateway.url
    async with session.get(url + "/metrics") as resp:
        return await resp.text()


async def metric(session: aiohttp.ClientSession, gateway: Gateway | str, name: str,
                 **labels: str) -> float:
    return sample_total(await metrics(session, gateway), name, **labels)


async def wait_active(session: aiohttp.ClientSession, gateway: Gateway, count: int,
                      **labels: str) -> None:
    """Until `gateway` holds exactly `count` subscriptions (matching `labels`)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        active = await metric(session, gateway, "gateway_subscriptions_active", **labels)
        if active == count:
            return
        assert time.monotonic() < deadline, f"{active} subscriptions active, not {count}"
        await asyncio.sleep(0.02)


async def wait_metric(session: aiohttp.ClientSession, gateway: Gateway | str, name: str,
                      condition: Callable[[float], bool], **labels: str) -> float:
    deadline = time.monotonic() + SETTLE_S
    while True:
        value = await metric(session, gateway, name, **labels)
        if condition(value):
            return value
        assert time.monotonic() < deadline, f"{name}{labels} = {value}"
        await asyncio.sleep(0.02)


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def no_leftovers(stack: Stack, session: aiohttp.ClientSession) -> AsyncIterator[None]:
    """Every test starts and ends with no subscription open on the stack's gateways (one that
    a test left would be counted by the next test's `wait_active`)."""
    gateways = [stack.memory, stack.nocache, stack.a, stack.b, *stack.extra.values()]
    for gateway in gateways:
        await wait_active(session, gateway, 0)
    yield
    for gateway in [stack.memory, stack.nocache, stack.a, stack.b, *stack.extra.values()]:
        await wait_active(session, gateway, 0)


# -- changes, made at the services as their other clients would ------------------------------
class Changes:
    def __init__(self, session: aiohttp.ClientSession, services: Services) -> None:
        self.session = session
        self.services = services

    async def call(self, service: str, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> Any:
        async with self.session.request(method, self.services.url(service) + path, json=body,
                                        headers=headers or {}) as resp:
            assert resp.status < 300, (resp.status, await resp.text())
            return await resp.json()

    async def restock(self, sku: str, quantity: int = 1) -> int:
        stock = await self.call("inventory", "POST", f"/inventory/{sku}/restock",
                                {"quantity": quantity})
        return int(stock["quantity"])

    async def rename(self, product_id: str, name: str) -> None:
        await self.call("catalog", "PATCH", f"/products/{product_id}", {"name": name})

    async def review(self, product_id: str, author_id: str, body: str) -> dict[str, Any]:
        return dict(await self.call("reviews", "POST", "/reviews", {
            "product_id": product_id, "author_id": author_id, "rating": 4, "body": body}))

    async def order(self, user_id: str, product_id: str) -> dict[str, Any]:
        return dict(await self.call(
            "orders", "POST", "/orders",
            {"user_id": user_id, "items": [{"product_id": product_id, "quantity": 1}]},
            {"Idempotency-Key": uuid.uuid4().hex}))

    async def cancel(self, order_id: str) -> dict[str, Any]:
        return dict(await self.call("orders", "POST", f"/orders/{order_id}/cancel"))


@pytest.fixture
def changes(session: aiohttp.ClientSession, svc: Services) -> Changes:
    return Changes(session, svc)


def bearer(sub: str, scope: str = "read:orders", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, scope, **claims)}"}
