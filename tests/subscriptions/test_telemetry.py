"""Subscriptions in the metrics (active subscriptions, events received, messages sent,
connections closed) and a span per event fan-out."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
import pytest_asyncio
import uvicorn
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.config.settings import Settings
from app.http.app import create_app
from services.seed import Dataset
from tests.harness import EVENT_SECRET, free_port
from tests.subscriptions.clients import WSConnection, subscribe
from tests.subscriptions.conftest import Changes, Stack, metric, wait_active, wait_metric

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_metrics_of_subscriptions(stack: Stack, session: aiohttp.ClientSession,
                                        changes: Changes, dataset: Dataset) -> None:
    gateway, sku = stack.memory, dataset.products["p801"]["sku"]

    async def value(name: str, **labels: str) -> float:
        return await metric(session, gateway, name, **labels)

    fanned = await value("gateway_subscription_events_total", entity="Stock",
                         outcome="fanned_out")
    sent = await value("gateway_subscription_messages_total", protocol="sse", kind="next")
    query = 'subscription { stockChanged(productId: "p801") { quantity } }'
    async with subscribe("sse", session, gateway.url, query) as sub:
        await wait_active(session, gateway, 1, protocol="sse", field="stockChanged")
        await changes.restock(sku)
        await sub.next()
        assert await value("gateway_subscription_events_total", entity="Stock",
                           outcome="fanned_out") >= fanned + 1
        await wait_metric(session, gateway, "gateway_subscription_messages_total",
                          lambda v: v == sent + 1, protocol="sse", kind="next")
    await wait_active(session, gateway, 0, protocol="sse", field="stockChanged")


@pytest_asyncio.fixture(loop_scope="session")
async def traced(stack: Stack) -> AsyncIterator[tuple[str, InMemorySpanExporter]]:
    """A gateway in this process, its spans in an in-memory exporter (no entity cache: the
    hub hears the events posted to its /events)."""
    port = free_port()
    settings = Settings.from_env({
        **stack.services.gateway_env(), "GATEWAY_PORT": str(port), "DEV_MODE": "true",
        "CACHE_ENABLED": "false", "RATE_LIMIT_ENABLED": "false",
        "EVENT_SECRET": EVENT_SECRET})
    exporter = InMemorySpanExporter()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, exporter), host="127.0.0.1",
                                           port=port, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", exporter
    finally:
        server.should_exit = True
        await task


async def test_a_span_per_event_fan_out(traced: tuple[str, InMemorySpanExporter],
                                        session: aiohttp.ClientSession,
                                        dataset: Dataset) -> None:
    url, exporter = traced
    sku = dataset.products["p802"]["sku"]
    connection = await WSConnection.open(url)
    try:
        await connection.init()
        subscriber = await connection.subscribe(
            "1", 'subscription { stockChanged(productId: "p802") { quantity } }')
        await wait_metric(session, url, "gateway_subscriptions_active", lambda v: v == 1,
                          field="stockChanged")
        body = orjson.dumps({"type": "Stock", "id": sku, "op": "update", "version": 10**9})
        signature = hmac.new(EVENT_SECRET.encode(), body, hashlib.sha256).hexdigest()
        async with session.post(url + "/events", data=body, headers={
                "X-Signature": f"sha256={signature}",
                "Content-Type": "application/json"}) as resp:
            assert resp.status == 204
        await subscriber.next()
    finally:
        await connection.close()
    spans = exporter.get_finished_spans()
    fan_out = next(s for s in spans if s.name == "GraphQL Subscription Event")
    assert fan_out.parent is None  # a trace of its own
    assert fan_out.attributes is not None
    assert fan_out.attributes["gateway.event.type"] == "Stock"
    assert fan_out.attributes["graphql.operation.type"] == "subscription"
    assert fan_out.attributes["gateway.event.id"] == sku
    assert fan_out.attributes["gateway.event.version"] == 10**9
    assert fan_out.attributes["gateway.subscribers"] == 1
    children = [s for s in spans if s.parent is not None
                and s.parent.span_id == fan_out.context.span_id]
    assert any(s.name == "GraphQL DataLoader Batch stock" for s in children), [s.name for s in children]
