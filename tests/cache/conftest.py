"""Gateways with the entity cache on, against their own reference services whose change
events reach them, and a real Redis: REDIS_URL when set, else a private redis-server; and
two replicas sharing a Redis Cluster."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import (
    Gateway,
    RedisClusterServers,
    Services,
    free_port,
    start_gateway,
    start_services,
)


@dataclass
class CacheStack:
    services: Services
    memory: Gateway  # the in-process cache only; receives the services' events
    a: Gateway  # two replicas sharing Redis; only `a` receives the services' events,
    b: Gateway  # so what `b` learns of a change comes through Redis
    responses: Gateway  # with the whole-response cache; receives the services' events
    prefix: str


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[CacheStack]:
    tmp = tmp_path_factory.mktemp("cache")
    ports = {name: free_port() for name in ("memory", "a", "b", "responses")}
    services = start_services(
        tmp, webhooks=[f"http://127.0.0.1:{ports[n]}/events"
                       for n in ("memory", "a", "responses")]
    )
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    shared = {"REDIS_URL": redis_url, "REDIS_PREFIX": prefix}
    gateways = {
        "memory": start_gateway(tmp, services, port=ports["memory"]),
        "a": start_gateway(tmp, services, port=ports["a"], env=shared),
        "b": start_gateway(tmp, services, port=ports["b"], env=shared),
        "responses": start_gateway(tmp, services, port=ports["responses"],
                                   env={"RESPONSE_CACHE": "true"}),
    }
    yield CacheStack(services, gateways["memory"], gateways["a"], gateways["b"],
                     gateways["responses"], prefix)
    for gateway in gateways.values():
        gateway.stop()
    services.stop()


@pytest.fixture
def cstack(stack: CacheStack) -> Iterator[CacheStack]:
    stack.services.clear_faults()
    stack.services.reset_stats()
    yield stack
    stack.services.clear_faults()


@dataclass
class Replicas:
    """Two gateway replicas sharing Redis (one, or a cluster); only `a` receives the
    services' change events, so what `b` learns of a change comes through Redis."""

    kind: str  # "redis" or "cluster"
    services: Services
    a: Gateway
    b: Gateway
    prefix: str
    url: str
    cluster: RedisClusterServers | None = None

    def keys(self, pattern: str) -> list[str]:
        """The keys matching `pattern`, on every master of a cluster."""
        if self.cluster is not None:
            return self.cluster.keys(pattern)
        import redis

        return [k.decode() for k in redis.Redis.from_url(self.url).scan_iter(pattern)]

    def pttl(self, key: str) -> int:
        """`key`'s time to live in ms, asked of the node that holds it."""
        import redis

        if self.cluster is not None:
            return int(self.cluster.client(self.cluster.master_of(key)).pttl(key))
        return int(redis.Redis.from_url(self.url).pttl(key))


@pytest.fixture(scope="session")
def cluster_replicas(tmp_path_factory: pytest.TempPathFactory,
                     redis_cluster: RedisClusterServers) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("cache-cluster")
    ports = {name: free_port() for name in ("a", "b")}
    services = start_services(tmp, webhooks=[f"http://127.0.0.1:{ports['a']}/events"])
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    shared = {"REDIS_URL": redis_cluster.url, "REDIS_PREFIX": prefix}
    a = start_gateway(tmp, services, port=ports["a"], env=shared)
    b = start_gateway(tmp, services, port=ports["b"], env=shared)
    yield Replicas("cluster", services, a, b, prefix, redis_cluster.url, redis_cluster)
    for gateway in (a, b):
        gateway.stop()
    services.stop()


@pytest.fixture(params=["redis", "cluster"])
def replicas(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Replicas]:
    """Two replicas on one Redis (the cache stack's a and b), then on a Redis Cluster."""
    if request.param == "redis":
        stack: CacheStack = request.getfixturevalue("stack")
        pair = Replicas("redis", stack.services, stack.a, stack.b, stack.prefix, redis_url)
    else:
        pair = request.getfixturevalue("cluster_replicas")
    pair.services.clear_faults()
    pair.services.reset_stats()
    yield pair
    pair.services.clear_faults()


# A coroutine (not any awaitable): tests run queries as tasks.
Query = Callable[..., Coroutine[Any, Any, tuple[int, dict[str, str], dict[str, Any]]]]


@pytest.fixture
def query(http_session: aiohttp.ClientSession) -> Query:
    """POST an operation to a gateway; returns (status, headers, body)."""

    async def call(gateway: Gateway, document: str, variables: dict[str, Any] | None = None,
                   user: str | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
        headers = {"X-User-Id": user} if user else {}
        async with http_session.post(gateway.url + "/graphql", headers=headers,
                                     json={"query": document, "variables": variables}) as resp:
            return resp.status, dict(resp.headers), await resp.json(content_type=None)

    return call


def make_gateway(tmp: Path, services: Services, **env: str) -> Gateway:
    return start_gateway(tmp, services, env=env)


def upstream_calls(services: Services, name: str, route: str) -> int:
    return int(services.stats(name)["requests"].get(route, 0))


def gateway_log(gateway: Gateway) -> str:
    return gateway.process.log()


async def wait_for(predicate: Callable[[], Awaitable[bool]], within: float = 2.0) -> float:
    """Poll `predicate` every 5 ms until it holds (an event the test waits for, not a
    guess of how long it takes); returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await predicate():
            return time.monotonic() - started
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not reached within {within} s")
