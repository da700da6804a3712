"""Exporters for real: OTLP over HTTP into a small receiver that decodes what arrives, with
the reference services continuing the gateway's traces; and the console exporter."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.harness import local_server, start_gateway, start_services
from tests.telemetry.conftest import DEEP, post

FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


@dataclass
class Received:
    service: str
    span: Span

    def attr(self, key: str) -> Any:
        for kv in self.span.attributes:
            if kv.key == key:
                value = kv.value
                return getattr(value, value.WhichOneof("value"))
        return None


@dataclass
class Receiver:
    """An OTLP/HTTP traces endpoint: decodes each export request into `spans`."""

    url: str
    spans: list[Received] = field(default_factory=list)
    requests: int = 0


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    received = Receiver("")

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        received.requests += 1
        for resource_spans in export.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes
                           if a.key == "service.name")
            for scope_spans in resource_spans.scope_spans:
                received.spans.extend(Received(service, s) for s in scope_spans.spans)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    async with local_server(app) as url:
        received.url = url
        yield received


async def test_otlp_export_carries_the_trace_through_the_services(
    receiver: Receiver, ttmp: Path, http_session: aiohttp.ClientSession
) -> None:
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, **FAST_EXPORT}
    services = start_services(ttmp / "otlp", env=otlp)
    gateway = start_gateway(ttmp / "otlp", services, env={
        **otlp, "OTEL_SERVICE_NAME": "gateway-under-test", "CACHE_ENABLED": "false"})
    try:
        status, body = await post(http_session, gateway.url, DEEP)
        assert status == 200 and "errors" not in body
        for _ in range(200):  # the batch processors export every 50 ms
            clients = [r for r in receiver.spans if r.service == "gateway-under-test"
                       and r.span.kind == Span.SPAN_KIND_CLIENT]
            servers = [r for r in receiver.spans if r.service != "gateway-under-test"]
            if clients and len(servers) == len(clients) and any(
                    r.span.name == "query" for r in receiver.spans):
                break
            await asyncio.sleep(0.05)
    finally:
        gateway.stop()
        services.stop()

    ours = [r for r in receiver.spans if r.service == "gateway-under-test"]
    [operation] = [r for r in ours if r.span.name == "query"]
    assert operation.attr("graphql.operation.name") == "Deep"
    assert operation.attr("graphql.operation.type") == "query"
    trace_id = operation.span.trace_id
    assert all(r.span.trace_id == trace_id for r in ours)
    assert [r for r in ours if r.span.name == "Review.author"]
    attempts = {r.span.span_id for r in ours if r.span.kind == Span.SPAN_KIND_CLIENT}
    assert attempts

    # Each service's server span continues the trace, as the child of the gateway's attempt.
    theirs = [r for r in receiver.spans if r.service != "gateway-under-test"]
    assert {r.service for r in theirs} == {"users", "catalog", "reviews", "inventory"}
    assert all(r.span.trace_id == trace_id for r in theirs)
    assert all(r.span.parent_span_id in attempts for r in theirs)
    assert len(theirs) == len(attempts)


async def test_the_console_exporter_prints_spans(
    ttmp: Path, tservices: Any, http_session: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(ttmp / "console", tservices,
                            env={"OTEL_TRACES_EXPORTER": "console", "CACHE_ENABLED": "false"})
    try:
        status, _ = await post(http_session, gateway.url, '{ topProducts(first: 1) { id } }')
        assert status == 200
        await asyncio.sleep(0.2)
    finally:
        gateway.stop()
    log = gateway.process.log()
    assert '"name": "Query.topProducts"' in log and '"name": "POST /graphql"' in log
