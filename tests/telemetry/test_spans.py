"""Spans of a request, read from an in-memory exporter: operation -> resolvers (nested by
path) -> DataLoader batches -> upstream calls -> HTTP attempts, with retries and error
classes under injected faults, and the sampling rules."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.util.types import AnyValue

from app.config.settings import Settings
from app.telemetry.extension import COORDINATE, PATH
from app.telemetry.tracing import GatewaySampler, build_telemetry
from app.upstream.client import UpstreamClient
from tests.harness import Services
from tests.telemetry.conftest import DEEP, InProcess, post

PRODUCT_REVIEWS = '{ product(id: "p451") { id name reviews(first: 3) { id author { id name } } } }'


def attrs(item: ReadableSpan | Event) -> Mapping[str, AnyValue]:
    """A span's or an event's attributes (optional in the SDK's types)."""
    return item.attributes or {}


def text(span: ReadableSpan, key: str) -> str:
    value = attrs(span)[key]
    assert isinstance(value, str), (span.name, key, value)
    return value


def number(span: ReadableSpan, key: str) -> int:
    value = attrs(span)[key]
    assert isinstance(value, int), (span.name, key, value)
    return value


class Tree:
    def __init__(self, spans: list[ReadableSpan]) -> None:
        self.spans = spans
        self.by_id = {s.context.span_id: s for s in spans}

    def parent(self, span: ReadableSpan) -> ReadableSpan:
        found = self.by_id.get(span.parent.span_id) if span.parent else None
        assert found is not None, f"{span.name} has no parent among the exported spans"
        return found

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def with_attr(self, key: str) -> list[ReadableSpan]:
        return [s for s in self.spans if key in attrs(s)]

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.spans if s.parent and s.parent.span_id == span.context.span_id]


async def traced_query(gw: InProcess, session: aiohttp.ClientSession, query: str,
                       headers: dict[str, str] | None = None) -> tuple[dict[str, Any], Tree]:
    gw.exporter.clear()
    status, body = await post(session, gw.url, query, headers)
    assert status == 200, body
    # The server span ends just after the response is sent: give it a moment to.
    for _ in range(50):
        if any(s.kind is SpanKind.SERVER for s in gw.spans()):
            break
        await asyncio.sleep(0.01)
    return body, Tree(gw.spans())


def review_count(data: dict[str, Any]) -> tuple[int, int]:
    """Reviews at the deep query's first and third level."""
    first = [r for p in data["topProducts"] for r in p["reviews"]]
    third = [r for f in first for ar in f["author"]["reviews"] for r in ar["product"]["reviews"]]
    return len(first), len(third)


async def test_the_deep_query_traces_as_a_tree_from_operation_to_http_calls(
    launch: Any, http_session: aiohttp.ClientSession, faults: Services
) -> None:
    gw = await launch()
    faults.reset_stats()
    body, tree = await traced_query(gw, http_session, DEEP)
    assert "errors" not in body
    assert len({s.context.trace_id for s in tree.spans}) == 1

    [server] = [s for s in tree.spans if s.kind is SpanKind.SERVER]
    assert server.parent is None and server.name == "POST /graphql"
    # The GraphQL OpenTelemetry working group's draft: the operation span is named by its
    # type (an ad-hoc operation's name is the client's choice: not in the span's name).
    [operation] = tree.named("query")
    assert tree.parent(operation) is server
    assert attrs(operation)["graphql.operation.name"] == "Deep"
    assert attrs(operation)["graphql.operation.type"] == "query"
    assert attrs(operation)["graphql.document"] == DEEP
    assert attrs(operation)["graphql.document.hash"] == \
        "sha256:" + hashlib.sha256(DEEP.encode()).hexdigest()
    assert not tree.named("query Deep")

    # Resolvers: named by coordinate, nested under the nearest traced ancestor by path.
    resolvers = tree.with_attr(COORDINATE)
    for span in resolvers:
        assert span.name == attrs(span)[COORDINATE]
        parent_type, field = span.name.split(".")
        assert attrs(span)["graphql.selection.field.parent_type"] == parent_type
        assert attrs(span)["graphql.selection.field.name"] == field
        assert attrs(span)["graphql.processing.type"] == "resolve"
        up = tree.parent(span)
        if "." not in text(span, PATH):
            assert up is operation
        else:
            assert COORDINATE in attrs(up), span.name
            parent_path = text(up, PATH)
            assert re.fullmatch(re.escape(parent_path) + r"(\[\d+\])*\.\w+",
                                text(span, PATH)), (parent_path, attrs(span)[PATH])
    [top] = tree.named("Query.topProducts")
    assert attrs(top)[PATH] == "topProducts"
    authors = tree.named("Review.author")
    assert "topProducts[0].reviews[0].author" in {attrs(a)[PATH] for a in authors}
    products = body["data"]["topProducts"]
    assert len(tree.named("Product.reviews")) == len(products) + sum(
        len(ar["product"]["reviews"]) >= 0 for p in products for r in p["reviews"]
        for ar in r["author"]["reviews"])
    first, third = review_count(body["data"])
    assert len(tree.named("Review.author")) == first + third
    # Trivial fields (key reads, a price formatted from its parent) have no spans.
    names = Counter(s.name for s in tree.spans)
    for trivial in ("Product.name", "Product.price", "Review.rating", "User.name"):
        assert trivial not in names

    # Batches: children of the resolver whose lookup started them.
    batches = tree.with_attr("graphql.dataloader.name")
    assert {attrs(b)["graphql.dataloader.name"] for b in batches} >= {
        "top_products", "stock", "category", "reviews_by_product", "user",
        "reviews_by_author", "product"}
    for batch in batches:
        assert COORDINATE in attrs(tree.parent(batch))
        assert batch.name == "GraphQL DataLoader Batch " + text(batch,
                                                                "graphql.dataloader.name")
        assert attrs(batch)["graphql.processing.type"] == "dataloader_batch"
        size = number(batch, "graphql.dataloader.batch.size")
        assert size >= 1
        # The cache is off: every key is a miss (and said so).
        assert attrs(batch)["graphql.dataloader.cache.hit_count"] == 0
        assert attrs(batch)["graphql.dataloader.cache.miss_count"] == size, batch.name
    [users] = [b for b in batches if attrs(b)["graphql.dataloader.name"] == "user"][:1]
    assert tree.parent(users).name == "Review.author"
    assert attrs(users)["graphql.dataloader.batch.size"] == len(
        {r["author"]["id"] for p in products for r in p["reviews"]})

    # Upstream calls under batches; HTTP attempts (aiohttp's client spans) under calls.
    calls = tree.with_attr("gateway.upstream.service")
    for call in calls:
        assert "graphql.dataloader.name" in attrs(tree.parent(call))
        assert attrs(call)["gateway.upstream.retries"] == 0
        [attempt] = tree.children(call)
        assert attempt.kind is SpanKind.CLIENT
        assert attrs(attempt)["http.request.method"] in ("GET", "POST")
        assert attrs(attempt)["http.response.status_code"] == 200
    sent = sum(sum(faults.stats(n)["requests"].values()) for n in
               ("users", "catalog", "inventory", "reviews"))
    assert len([s for s in tree.spans if s.kind is SpanKind.CLIENT]) == len(calls) == sent


async def test_retries_are_events_on_the_call_and_failures_carry_their_class(
    launch: Any, http_session: aiohttp.ClientSession, faults: Services
) -> None:
    gw = await launch(RETRY_BASE_S="0.001", RETRY_MAX_ATTEMPTS="3")
    faults.set_faults("users", error_rate=1.0, error_status=503)
    body, tree = await traced_query(gw, http_session, PRODUCT_REVIEWS)
    assert body["data"]["product"]["id"] == "p451"  # a partial result
    assert {e["extensions"]["code"] for e in body["errors"]} == {"UPSTREAM_UNAVAILABLE"}

    [call] = [c for c in tree.with_attr("gateway.upstream.service")
              if attrs(c)["gateway.upstream.service"] == "users"]
    assert attrs(call)["gateway.upstream.retries"] == 2  # three attempts
    assert attrs(call)["error.type"] == "UPSTREAM_UNAVAILABLE"
    assert call.status.status_code is StatusCode.ERROR
    retries = [e for e in call.events if e.name == "retry"]
    assert [attrs(e)["attempt"] for e in retries] == [2, 3]
    assert all(attrs(e)["error.type"] == "UPSTREAM_UNAVAILABLE" for e in retries)
    attempts = tree.children(call)
    assert len(attempts) == 3
    assert all(attrs(a)["http.response.status_code"] == 503 for a in attempts)

    authors = tree.named("Review.author")
    assert authors and all(attrs(a)["error.type"] == "UPSTREAM_UNAVAILABLE"
                           and a.status.status_code is StatusCode.ERROR for a in authors)
    [operation] = tree.with_attr("graphql.operation.type")
    assert operation.status.status_code is StatusCode.ERROR
    assert attrs(operation)["error.type"] == "UPSTREAM_UNAVAILABLE"

    # An answer off the contract is classified as such, and not retried.
    faults.set_faults("users", error_rate=0, bad_body_rate=1.0, bad_body="html")
    body, tree = await traced_query(gw, http_session, PRODUCT_REVIEWS)
    [call] = [c for c in tree.with_attr("gateway.upstream.service")
              if attrs(c)["gateway.upstream.service"] == "users"]
    assert attrs(call)["error.type"] == "UPSTREAM_BAD_RESPONSE"
    assert attrs(call)["gateway.upstream.retries"] == 0
    assert not [e for e in call.events if e.name == "retry"]


async def test_every_field_gets_a_span_when_the_setting_asks(
    launch: Any, http_session: aiohttp.ClientSession
) -> None:
    gw = await launch(TRACE_ALL_FIELDS="true")
    body, tree = await traced_query(gw, http_session, PRODUCT_REVIEWS)
    names = Counter(s.name for s in tree.spans)
    reviews = body["data"]["product"]["reviews"]
    assert names["Product.name"] == 1 and names["Review.id"] == len(reviews)
    assert names["User.name"] == len(reviews)
    [name] = tree.named("Product.name")
    assert tree.parent(name).name == "Query.product"


async def test_unsampled_traces_are_exported_only_when_the_request_failed(
    launch: Any, http_session: aiohttp.ClientSession, faults: Services
) -> None:
    gw = await launch(OTEL_TRACES_SAMPLER_ARG="0")
    body, tree = await traced_query(gw, http_session, PRODUCT_REVIEWS)
    assert "errors" not in body and tree.spans == []

    faults.set_faults("users", error_rate=1.0, error_status=500)
    body, tree = await traced_query(gw, http_session, PRODUCT_REVIEWS)
    assert body["errors"]
    [operation] = tree.named("query")  # (anonymous, and named by its type alone anyway)
    # Kept without its resolver spans (most of a trace's cost), with what tells the failure.
    assert tree.with_attr(COORDINATE) == []
    batches = tree.with_attr("graphql.dataloader.name")
    assert batches and all(tree.parent(b) is operation for b in batches)
    [call] = [c for c in tree.with_attr("gateway.upstream.service")
              if attrs(c)["gateway.upstream.service"] == "users"]
    assert attrs(call)["error.type"] == "UPSTREAM_UNAVAILABLE"
    # The exported trace is whole: the server span is its root.
    assert next(s for s in tree.spans if s.parent is None).kind is SpanKind.SERVER
    trace_id = format(tree.spans[0].context.trace_id, "032x")
    assert {e["extensions"]["traceId"] for e in body["errors"]} == {trace_id}

    gw = await launch(OTEL_TRACES_SAMPLER_ARG="0", TRACES_KEEP_FAILED="false")
    body, tree = await traced_query(gw, http_session, PRODUCT_REVIEWS)
    assert body["errors"] and tree.spans == []


async def test_a_sampled_incoming_traceparent_is_continued_and_an_unsampled_one_followed(
    launch: Any, http_session: aiohttp.ClientSession
) -> None:
    gw = await launch(OTEL_TRACES_SAMPLER_ARG="0", TRACES_KEEP_FAILED="false")
    parent_trace, parent_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    _, tree = await traced_query(
        gw, http_session, PRODUCT_REVIEWS,
        headers={"traceparent": f"00-{parent_trace}-{parent_span}-01"})
    assert tree.spans
    assert {format(s.context.trace_id, "032x") for s in tree.spans} == {parent_trace}
    [server] = [s for s in tree.spans if s.kind is SpanKind.SERVER]
    assert server.parent is not None and server.parent.is_remote
    assert format(server.parent.span_id, "016x") == parent_span

    gw = await launch(OTEL_TRACES_SAMPLER_ARG="1")
    _, tree = await traced_query(
        gw, http_session, PRODUCT_REVIEWS,
        headers={"traceparent": f"00-{parent_trace}-{parent_span}-00"})
    assert tree.spans == []


async def test_concurrent_requests_sharing_a_trace_keep_apart(
    launch: Any, http_session: aiohttp.ClientSession, faults: Services
) -> None:
    # A page makes several calls under one traceparent (unsampled): each request is held,
    # kept or dropped, and given its waterfall, on its own.
    gw = await launch(OTEL_TRACES_SAMPLER_ARG="0")
    faults.set_faults("users", latency_ms=100)
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    gw.exporter.clear()
    ok, failing = await asyncio.gather(
        post(http_session, gw.url, PRODUCT_REVIEWS,
             {"traceparent": parent, "X-Gateway-Debug": "1"}),
        post(http_session, gw.url, '{ product(id: "p451") { id } topProducts(first: -1) { id } }',
             {"traceparent": parent, "X-Gateway-Debug": "1"}))
    assert "errors" not in ok[1] and failing[1]["errors"]
    ok_rows = ok[1]["extensions"]["debug"]["resolvers"]
    failing_rows = failing[1]["extensions"]["debug"]["resolvers"]
    assert {r["coordinate"] for r in ok_rows} == {"Query.product", "Product.reviews",
                                                  "Review.author"}
    assert {r["coordinate"] for r in failing_rows} == {"Query.product", "Query.topProducts"}
    # Only the failed request was exported: one server span, the failing one's.
    tree = Tree(gw.spans())
    assert len([s for s in tree.spans if s.kind is SpanKind.SERVER]) == 1
    assert {s.context.trace_id for s in tree.spans} == {0x4bf92f3577b34da6a3ce929d0e0e4736}
    assert not tree.named("Review.author")


async def test_probes_and_scrapes_are_not_traced_whatever_the_host_header(
    launch: Any, http_session: aiohttp.ClientSession
) -> None:
    gw = await launch()
    gw.exporter.clear()
    for path in ("/readyz", "/healthz", "/metrics"):
        async with http_session.get(gw.url + path) as resp:
            assert resp.status == 200
    assert gw.spans() == []  # not even the readiness probes' calls to the services
    # A Host header cannot switch tracing off for a GraphQL request.
    trace_ids = set()
    for host in ("x/metrics", "x/graphql/ide/a.js", "x/graphql/ide/"):
        gw.exporter.clear()
        _, body = await post(http_session, gw.url, "{ nope }", headers={"Host": host})
        trace_ids.add(body["errors"][0]["extensions"]["traceId"])
        assert [s for s in gw.spans() if s.kind is SpanKind.SERVER], host
    # Each its own trace id, though the validation cache shares the error between them.
    assert len(trace_ids) == 3


async def test_a_cancelled_call_still_ends_its_span(faults: Services) -> None:
    faults.set_faults("users", hang_rate=1.0)
    exporter = InMemorySpanExporter()
    settings = Settings.from_env(faults.gateway_env())
    telemetry = build_telemetry(settings, exporter)
    client = UpstreamClient(settings, telemetry.observer, telemetry.aiohttp_trace_configs())
    await client.start()
    try:
        with telemetry.tracer.start_as_current_span("request"):
            call = asyncio.create_task(client.request("users", "GET", "/users",
                                                      params={"ids": "u1"}))
            await asyncio.sleep(0.2)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
    finally:
        await client.close()
    [span] = [s for s in exporter.get_finished_spans() if s.name == "users GET /users"]
    assert attrs(span)["error.type"] == "CancelledError"
    assert span.status.status_code is StatusCode.ERROR


def test_without_an_exporter_a_callers_sampled_flag_records_nothing() -> None:
    parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(
        0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED))))
    quiet = GatewaySampler(1.0, exporting=False, record_unsampled=False)
    assert quiet.should_sample(parent, 1, "POST /graphql").decision is Decision.DROP
    exporting = GatewaySampler(0.0, exporting=True, record_unsampled=False)
    assert exporting.should_sample(parent, 1, "POST /graphql").decision is \
        Decision.RECORD_AND_SAMPLE


async def test_a_warm_query_says_how_many_lookups_it_answered_at_hand(
    launch: Any, http_session: aiohttp.ClientSession, faults: Services
) -> None:
    # Lookups answered from the entity cache at hand have no batch span: the operation's
    # span counts them, and what batches remain say they were hits.
    gw = await launch(CACHE_ENABLED="true")
    await traced_query(gw, http_session, DEEP)
    body, tree = await traced_query(gw, http_session, DEEP)
    assert "errors" not in body
    [operation] = tree.named("query")
    assert number(operation, "gateway.cache.hits_at_hand") > 100
    assert not tree.with_attr("gateway.upstream.service")  # no upstream call at all
    for batch in tree.with_attr("graphql.dataloader.name"):
        assert attrs(batch)["graphql.dataloader.cache.hit_count"] == attrs(batch)[
            "graphql.dataloader.batch.size"], batch.name
        assert attrs(batch)["graphql.dataloader.cache.miss_count"] == 0


async def test_a_persisted_operation_is_named_by_its_type_and_name(
    launch: Any, http_session: aiohttp.ClientSession, tmp_path: Any
) -> None:
    """The draft allows `{type} {name}` for trusted documents (a bounded set): the
    persisted-query manifest's operations; any other keeps its type alone."""
    trusted = 'query ProductPage { product(id: "p451") { id name } }'
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({hashlib.sha256(trusted.encode()).hexdigest(): trusted}))
    gw = await launch(PERSISTED_QUERIES_FILE=str(manifest))
    _, tree = await traced_query(gw, http_session, trusted)
    [operation] = tree.named("query ProductPage")
    assert attrs(operation)["graphql.operation.name"] == "ProductPage"
    _, tree = await traced_query(gw, http_session, trusted.replace("name }", "sku }"))
    [operation] = tree.named("query")
    assert attrs(operation)["graphql.operation.name"] == "ProductPage"
