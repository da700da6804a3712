"""Session fixtures: the reference services and a gateway, as real processes on free ports."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.seed import Dataset, generate
from tests.harness import (
    Gateway,
    RedisClusterServers,
    Services,
    free_port,
    start_gateway,
    start_redis,
    start_redis_cluster,
    start_services,
)

SEED = 42
GQL = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture(scope="session")
def dataset() -> Dataset:
    """The same data the services seed themselves with: the tests' independent oracle."""
    return generate(SEED, 1.0)


@pytest.fixture(scope="session")
def gateway_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory, gateway_port: int) -> Iterator[Services]:
    svc = start_services(
        tmp_path_factory.mktemp("services"),
        seed=SEED,
        webhooks=[f"http://127.0.0.1:{gateway_port}/events"],
    )
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, services: Services, gateway_port: int
) -> Iterator[Gateway]:
    # The foundation's tests measure cold batching: the entity cache is off here, and the
    # caching tests start gateways of their own with it on. The breaker is off too, so that
    # a test injecting failures cannot leave a service's breaker open for the next test;
    # the resilience tests start gateways of their own with it on.
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), services, port=gateway_port,
                       env={"CACHE_ENABLED": "false", "BREAKER_ENABLED": "false"})
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL when set, else a private redis-server for the session."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A Redis Cluster for the session: three masters with a replica each. Tests that kill
    a node start a cluster of their own."""
    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(params=["redis", "cluster"])
def shared_redis_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    """REDIS_URL of one Redis, then of a Redis Cluster: a test of what replicas share
    through Redis runs on both."""
    if request.param == "redis":
        return redis_url
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    return cluster.url


@pytest.fixture
def clean_services(services: Services) -> Iterator[Services]:
    """Services with zeroed stats and no faults, restored after the test."""
    with services.cleaned() as clean:
        yield clean


@pytest.fixture(scope="session")
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        # Idle connections go before any server's keep-alive closes them under our feet.
        connector=aiohttp.TCPConnector(keepalive_timeout=2)
    ) as session:
        yield session


@pytest.fixture
def gql(gateway: Gateway, http_session: aiohttp.ClientSession) -> GQL:
    """POST a GraphQL operation to the gateway; returns the decoded response body."""

    async def call(
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        user: str | None = None,
        headers: dict[str, str] | None = None,
        expect_status: int | None = 200,
    ) -> dict[str, Any]:
        hdrs = dict(headers or {})
        if user is not None:
            hdrs["X-User-Id"] = user
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        async with http_session.post(
            gateway.url + "/graphql", json=payload, headers=hdrs
        ) as resp:
            body = await resp.json(content_type=None)
            if expect_status is not None:
                assert resp.status == expect_status, body
            return body

    return call


def data_of(body: dict[str, Any]) -> dict[str, Any]:
    """The data of a response that must have no errors."""
    assert not body.get("errors"), body.get("errors")
    return body["data"]


QUERIES = Path(__file__).resolve().parent.parent / "bench" / "queries"
