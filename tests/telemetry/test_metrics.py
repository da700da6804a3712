"""`/metrics`, parsed with prometheus-client's own parser, after a few real queries; and the
same totals from two worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import ROOT, Gateway, Services, listeners, sample_total
from tests.telemetry.conftest import DEEP, post

PRODUCT_REVIEWS = '{ product(id: "p451") { id reviews(first: 3) { id author { id name } } } }'


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(self, family: str, suffix: str = "") -> list[Any]:
        return [s for s in self.families[family].samples if s.name == family + suffix]

    def value(self, family: str, suffix: str = "", **labels: str) -> float:
        assert family in self.families, family  # the series exists, even at 0
        return sample_total(self.text, family + suffix, **labels)


async def scrape(session: aiohttp.ClientSession, gateway: Gateway) -> Scrape:
    async with session.get(gateway.url + "/metrics") as resp:
        assert resp.status == 200
        return Scrape(await resp.text())


async def test_metrics_cover_requests_resolvers_upstreams_cache_and_batches(
    processes: Callable[..., Gateway], faults: Services, http_session: aiohttp.ClientSession
) -> None:
    gateway = processes(CACHE_ENABLED="true", RETRY_BASE_S="0.001", RESOLVER_METRICS_RATIO="1",
                        RETRY_BUDGET_RATIO="0", RETRY_BUDGET_MIN_PER_S="0.1")
    for _ in range(2):  # the second is served by the entity cache
        status, body = await post(http_session, gateway.url, DEEP)
        assert status == 200 and "errors" not in body
    status, _ = await post(http_session, gateway.url, "{ nope }")
    assert status == 200  # a validation error: no data
    async with http_session.post(gateway.url + "/graphql", data=b"{not json",
                                 headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
    faults.set_faults("users", error_rate=1.0, error_status=503)
    status, body = await post(http_session, gateway.url, PRODUCT_REVIEWS)
    assert body["data"]["product"] and body["errors"]

    m = await scrape(http_session, gateway)
    # Requests and latency by operation and outcome.
    assert m.value("gateway_requests", "_total", operation="Deep", outcome="ok") == 2
    assert m.value("gateway_request_duration_seconds", "_count", operation="Deep",
                   outcome="ok") == 2
    # Refused: the body that is not JSON, and the document that does not validate.
    assert m.value("gateway_requests", "_total", operation="anonymous", outcome="refused") == 2
    assert m.value("gateway_requests", "_total", operation="anonymous", outcome="error") == 0
    assert m.value("gateway_requests", "_total", operation="anonymous", outcome="partial") == 1
    # Resolver latency by schema coordinate only: no ids, no paths.
    coordinates = {s.labels["coordinate"] for s in
                   m.samples("gateway_resolver_duration_seconds", "_count")}
    assert {"Query.topProducts", "Review.author", "Product.inStock"} <= coordinates
    assert all(re.fullmatch(r"[A-Z]\w*\.\w+", c) for c in coordinates), coordinates
    assert m.value("gateway_resolver_duration_seconds", "_count",
                   coordinate="Query.topProducts") == 2
    # Upstream calls, latency and errors by service, route and class; retries and refusals.
    assert m.value("gateway_upstream_calls", "_total", service="users", route="/users",
                   outcome="OK") >= 2
    assert m.value("gateway_upstream_calls", "_total", service="users", route="/users",
                   outcome="UPSTREAM_UNAVAILABLE") == 1
    assert m.value("gateway_upstream_duration_seconds", "_count", service="catalog",
                   route="/products") >= 2
    assert m.value("gateway_upstream_retries", "_total", service="users") == 1
    assert m.value("gateway_retry_budget_refusals", "_total", service="users") == 1
    assert m.value("gateway_circuit_state", service="users") == 0
    assert {s.labels["service"] for s in m.samples("gateway_circuit_state")} == {
        "users", "catalog", "inventory", "orders", "reviews", "recommendations"}
    # The entity cache by type, and batch sizes by loader.
    assert m.value("gateway_cache_events", "_total", entity="User", outcome="miss") > 0
    assert m.value("gateway_cache_events", "_total", entity="User", outcome="hit") > 0
    assert m.value("gateway_loader_batch_size", "_count", loader="user") >= 2
    assert m.value("gateway_loader_batch_size", "_sum", loader="user") > m.value(
        "gateway_loader_batch_size", "_count", loader="user")


async def test_two_workers_report_the_totals_of_both(
    processes: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    gateway = processes(GATEWAY_WORKERS="2", RESOLVER_METRICS_RATIO="1")
    pids: set[int] = set()
    sent = 0
    # New connections, 8 at a time: while one worker is busy the other accepts (one at a
    # time, an idle worker can win every accept).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        while sent < 400 and (len(pids) < 2 or sent < 20):
            answers = await asyncio.gather(*(
                post(s, gateway.url, "query Two { topProducts(first: 2) { id } }")
                for _ in range(8)))
            assert all(status == 200 for status, _ in answers)
            sent += len(answers)
            pids = {line["pid"] for line in _access_lines(gateway)}
    assert len(pids) == 2, "one worker answered everything"
    for _ in range(3):  # whichever worker answers the scrape, it reports both
        m = await scrape(http_session, gateway)
        assert m.value("gateway_requests", "_total", operation="Two", outcome="ok") == sent
        assert m.value("gateway_resolver_duration_seconds", "_count",
                       coordinate="Query.topProducts") == sent
    # CPU and memory: both workers' together (the dashboard's panels), not the answerer's.
    memory = [_worker_rss(pid) for pid in pids]
    assert m.value("process_resident_memory_bytes") >= 0.9 * sum(memory) > 1.5 * max(memory)
    assert m.value("process_cpu_seconds", "_total") > 0


def _worker_rss(pid: int) -> int:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _access_lines(gateway: Gateway) -> list[dict[str, Any]]:
    lines = []
    for raw in gateway.process.log().splitlines():
        if raw.startswith('{"'):  # (a console exporter's spans are indented JSON)
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if line.get("logger") == "gateway.access":
                lines.append(line)
    return lines


async def test_resolver_timings_are_sampled_per_request_by_setting(
    processes: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    query = "query Top { topProducts(first: 2) { id inStock } }"
    for ratio, expected in (("0", 0), ("0.5", None)):
        gateway = processes(RESOLVER_METRICS_RATIO=ratio)
        for _ in range(40):
            await post(http_session, gateway.url, query)
        m = await scrape(http_session, gateway)
        timed = m.value("gateway_resolver_duration_seconds", "_count",
                        coordinate="Query.topProducts")
        assert m.value("gateway_requests", "_total", operation="Top") == 40
        if expected is not None:
            assert timed == expected
        else:  # about half of the requests; each times its one topProducts call
            assert 5 <= timed <= 35, timed
            assert m.value("gateway_resolver_duration_seconds", "_count",
                           coordinate="Product.inStock") == 2 * timed


async def test_cycle_collector_pauses_are_timed_by_generation(
    processes: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    """The collector stops the loop while it runs: an SRE reading a p99 sees its pauses.
    Requests leave no cyclic garbage (test_memory.py), so under load it rarely runs; the
    full pass at start-up (before the start-up heap is frozen) is timed like any other."""
    gateway = processes()
    m = await scrape(http_session, gateway)
    assert m.value("gateway_gc_pause_seconds", "_count", generation="2") >= 1
    assert m.value("gateway_gc_pause_seconds", "_sum", generation="2") > 0
    assert {s.labels["generation"] for s in m.samples("gateway_gc_pause_seconds", "_count")
            } == {"0", "1", "2"}


def test_timing_collections_cannot_deadlock_the_metrics(tmp_path: Path) -> None:
    """With several workers prometheus_client has one lock for every value, held while it
    allocates a new series: a collection started there must not wait for that lock."""
    script = (
        "import gc\n"
        "from app.telemetry import metrics\n"
        "metrics.watch_gc()\n"
        "gc.set_threshold(1)\n"  # a collection at nearly every allocation
        "for i in range(300):\n"
        "    metrics.REQUESTS.labels(f'op{i}', 'ok').inc()\n"
        "gc.set_threshold(700)\n"
        "metrics.flush_gc()\n"
        "print(sum(c._sum.get() > 0 for c in metrics._GC_CHILDREN))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 1  # and the pauses were recorded, once flushed


async def test_a_fresh_gateway_reports_its_known_series_at_zero(
    processes: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    """Before any request, every series whose labels are known at start exists (at 0), so
    that `rate()` and the alerts read zero rather than no data; with two workers too."""
    services = ("users", "catalog", "inventory", "orders", "reviews", "recommendations")
    for workers in ("1", "2"):
        gateway = processes(GATEWAY_WORKERS=workers)
        m = await scrape(http_session, gateway)
        for outcome in ("ok", "partial", "error", "refused", "aborted"):
            for operation in ("anonymous", "other"):
                assert m.value("gateway_requests", "_total", operation=operation,
                               outcome=outcome) == 0
                assert m.value("gateway_request_duration_seconds", "_count",
                               operation=operation, outcome=outcome) == 0
        for service in services:
            for family in ("gateway_upstream_retries", "gateway_retry_budget_refusals",
                           "gateway_circuit_opened"):
                assert m.samples(family, "_total") and m.value(
                    family, "_total", service=service) == 0, (family, service)
            assert m.value("gateway_circuit_state", service=service) == 0
            outcomes = {s.labels["outcome"] for s in m.samples("gateway_upstream_calls", "_total")
                        if s.labels["service"] == service}
            assert {"OK", "UPSTREAM_UNAVAILABLE", "UPSTREAM_TIMEOUT", "CIRCUIT_OPEN",
                    "DEADLINE_EXCEEDED"} <= outcomes, service
        assert {(s.labels["entity"], s.labels["outcome"])
                for s in m.samples("gateway_cache_events", "_total")} >= {
            (e, o) for e in ("User", "Product", "Review", "Order", "Stock", "Category")
            for o in ("hit", "miss", "stale", "eviction")}
        assert {s.labels["loader"] for s in m.samples("gateway_loader_batch_size", "_count")
                } >= {"user", "product", "stock", "reviews_by_product", "top_products"}
        assert m.value("gateway_redis_outages", "_total") == 0
        assert m.value("gateway_redis_state") == 0
        assert {(s.labels["protocol"], s.labels["reason"]) for s in
                m.samples("gateway_subscription_connections_closed", "_total")} >= {
            ("ws", "slow_consumer"), ("sse", "shutdown")}
        assert {s.labels["field"] for s in m.samples("gateway_subscriptions_active")} == {
            "stockChanged", "productChanged", "reviewAdded", "orderUpdated"}
        assert m.value("gateway_subscription_events", "_total", entity="Stock",
                       outcome="fanned_out") == 0
        assert m.value("gateway_http_aborted", "_total", reason="client_disconnect") == 0
        for client in ("unknown", "other"):
            assert m.value("gateway_client_requests", "_total", client_name=client,
                           client_version=client, outcome="ok") == 0
        for family in ("gateway_orders_placed", "gateway_orders_cancelled",
                       "gateway_reviews_added"):
            assert m.value(family, "_total") == 0
        assert {(s.labels["kind"], s.value) for s in m.samples("gateway_operation_cost",
                                                                "_count")} == {
            ("estimated", 0), ("actual", 0)}
        assert m.value("gateway_operation_cost_delta", "_count") == 0
        # Every deprecated field, by the bounded client names known at start.
        assert {(s.labels["coordinate"], s.labels["client_name"], s.value) for s in
                m.samples("gateway_deprecated_field_uses", "_total")} == {
            ("Product.inStock", "unknown", 0), ("Product.inStock", "other", 0)}


OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
EXEMPLAR = re.compile(r'^(\w+)_bucket\{([^}]*)\} \S+ # \{trace_id="([0-9a-f]{32})"\} (\S+)')


async def exemplars(session: aiohttp.ClientSession, gateway: Gateway
                    ) -> dict[str, list[tuple[str, str]]]:
    """The exemplars of an OpenMetrics scrape: per family, (labels, trace id)."""
    async with session.get(gateway.url + "/metrics", headers={"Accept": OPENMETRICS}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        text = await resp.text()
    assert text.rstrip().endswith("# EOF")
    found: dict[str, list[tuple[str, str]]] = {}
    for line in text.splitlines():
        match = EXEMPLAR.match(line)
        if match:
            found.setdefault(match[1], []).append((match[2], match[3]))
    return found


def operation_of(labels: str) -> str:
    match = re.search(r'operation="(\w+)"', labels)
    assert match is not None, labels
    return match[1]


async def test_latency_buckets_link_to_sampled_traces_across_workers(
    processes: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    """Asked for OpenMetrics, the latency histograms carry the trace id of a sampled request
    they counted; with two workers, whichever answers the scrape shows both workers'."""
    gateway = processes(GATEWAY_WORKERS="2", OTEL_TRACES_EXPORTER="console",
                        RESOLVER_METRICS_RATIO="1")
    pids: set[int] = set()
    sent = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        while sent < 200 and (len(pids) < 2 or sent < 8):
            await asyncio.gather(*(
                post(s, gateway.url, f"query Ex{sent + i} {{ topProducts(first: 2) {{ id }} }}")
                for i in range(4)))
            sent += 4
            pids = {line["pid"] for line in _access_lines(gateway)}
    assert len(pids) == 2, "one worker answered everything"
    # Each operation is its own series: its one request's trace is its exemplar.
    for _ in range(100):  # (a request's line is written just after its answer)
        traces = {line["operation"]: line["trace_id"] for line in _access_lines(gateway)
                  if line.get("operation", "").startswith("Ex")}
        if len(traces) == sent:
            break
        await asyncio.sleep(0.05)
    assert len(traces) == sent
    for _ in range(100):  # the other worker writes its exemplars within a second
        found = await exemplars(http_session, gateway)
        requests = {operation_of(labels): trace_id
                    for labels, trace_id in found.get("gateway_request_duration_seconds", [])}
        if requests == traces:
            break
        await asyncio.sleep(0.05)
    assert requests == traces
    # The upstream call and resolver buckets link to those traces too.
    for family in ("gateway_upstream_duration_seconds", "gateway_resolver_duration_seconds"):
        assert found.get(family), family
        assert {t for _, t in found[family]} <= set(traces.values()), family
    # Prometheus's text format (the default) has no exemplars.
    async with http_session.get(gateway.url + "/metrics") as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert "trace_id" not in await resp.text()


async def test_unsampled_requests_leave_no_exemplar(
    processes: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    """An exemplar must lead to a trace the backend has: an unsampled one has none."""
    gateway = processes(OTEL_TRACES_EXPORTER="console", OTEL_TRACES_SAMPLER_ARG="0",
                        TRACES_KEEP_FAILED="false", RESOLVER_METRICS_RATIO="1")
    for _ in range(5):
        status, _ = await post(http_session, gateway.url, "query Quiet { topProducts(first: 2) { id } }")
        assert status == 200
    assert await exemplars(http_session, gateway) == {}
    m = await scrape(http_session, gateway)
    assert m.value("gateway_requests", "_total", operation="Quiet", outcome="ok") == 5


async def test_the_slo_indicator_counts_the_gateways_failures_apart_from_the_clients(
    processes: Callable[..., Gateway], faults: Services, http_session: aiohttp.ClientSession
) -> None:
    """gateway_sli_duration_seconds{type, fault}: a request whose errors are all the client's
    own (a validation error, a NOT_FOUND, a body that is not JSON) is fault="client"; one
    with an upstream's failure is fault="server", partial data or not (ops/prometheus)."""
    gateway = processes(RETRY_BUDGET_RATIO="0", RETRY_BUDGET_MIN_PER_S="0.1")
    m = await scrape(http_session, gateway)
    # Every series is there from the start, at 0: the rules read zeros, not "no data".
    assert {(s.labels["type"], s.labels["fault"])
            for s in m.samples("gateway_sli_duration_seconds", "_count")} == {
        (t, f) for t in ("query", "mutation", "subscription", "batch", "unknown")
        for f in ("none", "client", "server")}
    assert {s.labels["outcome"] for s in m.samples("gateway_change_events", "_total")} == {
        "applied", "ignored", "held", "rejected"}
    assert m.value("gateway_worker_restarts", "_total") == 0

    status, body = await post(http_session, gateway.url, '{ product(id: "p451") { id } }')
    assert status == 200 and "errors" not in body
    status, body = await post(http_session, gateway.url, "{ nope }")
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    # Partial: the product, and the order field refused to an anonymous caller.
    status, body = await post(http_session, gateway.url,
                              '{ product(id: "p451") { id } order(id: "o1") { id } }')
    assert body["data"]["product"] and body["data"]["order"] is None
    assert {e["extensions"]["code"] for e in body["errors"]} == {"UNAUTHENTICATED"}
    async with http_session.post(gateway.url + "/graphql", data=b"{not json",
                                 headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
    # A change event with a wrong signature: rejected (its silence alerts, not its refusal).
    async with http_session.post(gateway.url + "/events", data=b"{}",
                                 headers={"X-Signature": "sha256=" + "0" * 64}) as resp:
        assert resp.status == 401
    faults.set_faults("reviews", error_rate=1.0, error_status=503)
    status, body = await post(http_session, gateway.url,
                              '{ product(id: "p451") { id reviews(first: 2) { id } } }')
    assert body["data"]["product"]["id"] == "p451"
    assert {e["extensions"]["code"] for e in body["errors"]} == {"UPSTREAM_UNAVAILABLE"}

    m = await scrape(http_session, gateway)
    count = "_count"
    assert m.value("gateway_sli_duration_seconds", count, type="query", fault="none") == 1
    assert m.value("gateway_sli_duration_seconds", count, type="query", fault="client") == 1
    # Refused before it ran (it did not validate; the body that is not JSON): no type.
    assert m.value("gateway_sli_duration_seconds", count, type="unknown", fault="client") == 2
    assert m.value("gateway_sli_duration_seconds", count, type="query", fault="server") == 1
    assert m.value("gateway_sli_duration_seconds", count, fault="server") == 1
    assert m.value("gateway_change_events", "_total", outcome="rejected") == 1
    assert m.value("gateway_change_events", "_total", outcome="applied") == 0


async def test_a_killed_workers_breaker_state_does_not_outlive_it(
    processes: Callable[..., Gateway], faults: Services, http_session: aiohttp.ClientSession
) -> None:
    """The breaker gauge is the worst state among live workers: a worker killed with its
    breaker open (SIGKILL: it cannot say so itself) must not hold GatewayCircuitOpen open
    forever. The supervisor forgets it when it starts the next one."""
    gateway = processes(GATEWAY_WORKERS="2", BREAKER_MIN_CALLS="2", BREAKER_OPEN_S="600",
                        RETRY_BUDGET_RATIO="0", RETRY_BUDGET_MIN_PER_S="0.1")
    faults.set_faults("catalog", error_rate=1.0, error_status=503)
    query = '{ product(id: "p3") { id } }'
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for _ in range(40):
            await asyncio.gather(*(post(s, gateway.url, query) for _ in range(4)))
    m = await scrape(http_session, gateway)
    assert m.value("gateway_circuit_state", service="catalog") == 2
    faults.clear_faults()
    supervisor = gateway.process.proc.pid
    workers = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    for pid in workers:
        os.kill(int(pid), 9)
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        current = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        if len(current) == 2 and not set(current) & set(workers):
            break
        assert asyncio.get_running_loop().time() < deadline, current
        await asyncio.sleep(0.1)
    while listeners(gateway.port) < 2:  # both new workers serving
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    m = await scrape(http_session, gateway)
    # The new workers' breakers are closed; the dead ones' open state is gone with them.
    assert m.value("gateway_circuit_state", service="catalog") == 0
    assert m.value("gateway_worker_restarts", "_total") == 2
