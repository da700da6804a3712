"""A real Prometheus (Debian's `prometheus`) scraping a real gateway with two workers, with
the rules of ops/prometheus (their `for:` shortened to seconds) and traffic with injected
faults. Asserted through Prometheus's HTTP API: every recording rule has data, an outage
takes its alerts from pending to firing, and so do slow queries and a stalled Redis, a killed worker fires
GatewayWorkerRestarting, every query of the Grafana dashboard parses and returns series, and (once the gateway
sends them) a latency exemplar leads to a trace."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.core.process import die_with_parent
from tests.harness import (
    ROOT,
    Gateway,
    RedisServer,
    Services,
    free_port,
    http,
    listeners,
    require,
    start_gateway,
    start_redis,
    start_services,
    token,
)

RULES = ROOT / "ops" / "prometheus"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "gateway.json"
PROMETHEUS = shutil.which("prometheus")
# What the test's rules wait instead of their `for:` (a minute to fifteen in production).
TEST_FOR = "4s"
# Grafana's $__rate_interval, here: at least four scrapes of the test's 1 s interval.
RATE_INTERVAL = "30s"

PRODUCT = """query Product($id: ID!) {
  product(id: $id) { id name reviews(first: 2) { id author { id name } } } }"""
PLACE = """mutation Place($input: PlaceOrderInput!) {
  placeOrder(input: $input) { order { id } errors { code } } }"""


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        status, _, body = http("GET", f"{self.url}/api/v1/{path}?{query}", timeout=30)
        assert status == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            time.sleep(0.25)
        raise AssertionError(f"{what}: not within {timeout} s\n" + self.log_path.read_text())


@dataclass
class Stack:
    services: Services
    redis: RedisServer
    gateway: Gateway
    prometheus: Prometheus
    metrics_url: str


def shortened_rules(tmp: Path) -> Path:
    """A copy of ops/prometheus's rule files whose `for:` durations are seconds."""
    folder = tmp / "rules"
    folder.mkdir()
    for path in RULES.glob("*.rules.yml"):
        text = re.sub(r"^(\s+for:) \S+$", rf"\1 {TEST_FOR}", path.read_text(), flags=re.M)
        (folder / path.name).write_text(text)
    return folder


def start_prometheus(tmp: Path, target: str, rules: Path) -> Prometheus:
    port = free_port()  # never 9090: the package may run a system Prometheus there
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                   "evaluation_interval": "1s"},
        "rule_files": [str(rules / "*.rules.yml")],
        "scrape_configs": [{"job_name": "gateway", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [target]}]}],
    }))
    log_path = tmp / "prometheus.log"
    assert PROMETHEUS is not None
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=exemplar-storage",
         "--storage.tsdb.retention.time=1h"],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        try:
            if http("GET", url + "/-/ready", timeout=1)[0] == 200:
                return Prometheus(url, process, log_path)
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("prometheus did not start:\n" + log_path.read_text())


class Traffic:
    """Callers in a thread until stopped: product pages (a thousand, so that the entity cache
    misses some all along; their reviews' authors repeat, and hit), a document that does not validate (the client's fault), and orders (so
    that change events come back to /events)."""

    def __init__(self, gateway: Gateway, user_token: str) -> None:
        self.gateway = gateway
        self.token = user_token
        self.stopping = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        url = self.gateway.url + "/graphql"
        auth = {"Authorization": f"Bearer {self.token}"}
        while not self.stopping.is_set():
            n = self.sent
            try:
                http("POST", url, {"query": PRODUCT, "variables": {"id": f"p{n % 1000 + 1}"}},
                     timeout=5)
                if n % 5 == 0:
                    http("POST", url, {"query": "{ nope }"}, timeout=5)
                if n % 10 == 0:
                    http("POST", url, {"query": PLACE, "variables": {"input": {
                        "items": [{"productId": f"p{4001 + n % 50}", "quantity": 1}],
                        "idempotencyKey": str(uuid.uuid4())}}}, auth, timeout=5)
            except OSError:
                pass  # a worker killed mid-request (test_a_killed_worker...)
            self.sent += 1
            time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require(PROMETHEUS is not None, "prometheus (Debian's prometheus package)")
    tmp = tmp_path_factory.mktemp("prometheus")
    redis = start_redis(tmp / "redis")
    gateway_port, metrics_port = free_port(), free_port()
    services = start_services(tmp / "services",
                              webhooks=[f"http://127.0.0.1:{gateway_port}/events"])
    gateway = None
    prometheus = None
    try:
        gateway = start_gateway(tmp / "gateway", services, port=gateway_port, env={
            "GATEWAY_WORKERS": "2", "METRICS_PORT": str(metrics_port),
            "REDIS_URL": redis.url, "CACHE_ENABLED": "true", "LOG_FORMAT": "json",
            "RESOLVER_METRICS_RATIO": "1", "RETRY_BASE_S": "0.001",
            # Few retries allowed, so that an outage spends the budget.
            "RETRY_BUDGET_RATIO": "0", "RETRY_BUDGET_MIN_PER_S": "0.5",
            "BREAKER_MIN_CALLS": "5", "BREAKER_OPEN_S": "2",
            # Traces exported (to the log), a sample of them: only a sampled request's trace
            # can be an exemplar.
            "OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER_ARG": "0.2"})
        prometheus = start_prometheus(tmp, f"127.0.0.1:{metrics_port}", shortened_rules(tmp))
        with Traffic(gateway, token("u7", "read:orders write:orders")):
            yield Stack(services, redis, gateway, prometheus,
                        f"http://127.0.0.1:{metrics_port}")
    finally:
        if prometheus is not None:
            prometheus.process.terminate()
            prometheus.process.wait(10)
        if gateway is not None:
            gateway.stop()
        services.stop()
        redis.stop()


def recording_rules() -> list[tuple[str, dict[str, str]]]:
    found = []
    for path in sorted(RULES.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    found.append((rule["record"], rule.get("labels", {})))
    return found


def numeric(result: list[dict[str, Any]]) -> bool:
    return any(sample["value"][1] not in ("NaN", "+Inf", "-Inf") for sample in result)


def has_number(prometheus: Prometheus, expr: str) -> bool:
    return numeric(prometheus.query(expr))


def selector(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def test_every_recording_rule_has_data(stack: Stack) -> None:
    rules = recording_rules()
    assert len(rules) == 17
    for name, labels in rules:
        expr = selector(name, labels)
        stack.prometheus.wait(partial(has_number, stack.prometheus, expr), f"{expr} has a number")
    # Healthy traffic: the client's own failures (the document that does not validate) are
    # no server fault, and the SLO's error ratio is 0.
    [ratio] = stack.prometheus.query("gateway:slo_availability_errors:ratio_rate5m")
    assert float(ratio["value"][1]) == 0
    assert stack.prometheus.query(
        'sum(rate(gateway_sli_duration_seconds_count{fault="client"}[1m])) > 0')
    # The orders placed came back as change events, applied on /events.
    stack.prometheus.wait(lambda: stack.prometheus.query(
        'sum(gateway_change_events_total{outcome="applied"}) > 0'), "a change event applied")


def watch(prometheus: Prometheus, names: set[str],
          until: Callable[[list[dict[str, Any]]], bool],
          timeout: float = 120) -> dict[str, list[str]]:
    """Each alert's states in the order Prometheus reported them (repeats dropped), until
    `until(alerts)`."""
    seen: dict[str, list[str]] = {name: [] for name in names}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alerts = prometheus.api("alerts")["alerts"]
        for alert in alerts:
            states = seen.get(alert["labels"]["alertname"])
            if states is not None and (not states or states[-1] != alert["state"]):
                states.append(alert["state"])
        if until(alerts):
            break
        time.sleep(0.2)
    return seen


def firing(alerts: list[dict[str, Any]], name: str, **labels: str) -> bool:
    return any(a["labels"]["alertname"] == name and a["state"] == "firing"
               and all(a["labels"].get(k) == v for k, v in labels.items()) for a in alerts)


def test_slow_queries_take_latency_burn_from_pending_to_firing(stack: Stack) -> None:
    prometheus = stack.prometheus
    assert not prometheus.alerts("GatewayLatencyBudgetBurn")
    # Every catalog answer 0.6 s late: a product page that misses the cache is over 0.5 s.
    # Eight more callers, each on products of its own, so that slow requests soon make more
    # than 14.4 % of all since the start (the windows hold the whole test: it runs early).
    stack.services.set_faults("catalog", latency_ms=600)
    stop = threading.Event()

    def caller(first: int) -> None:
        n = first
        while not stop.is_set():
            http("POST", stack.gateway.url + "/graphql",
                 {"query": PRODUCT, "variables": {"id": f"p{n}"}}, timeout=10)
            n += 8

    callers = [threading.Thread(target=caller, args=(1001 + i,), daemon=True)
               for i in range(8)]
    for thread in callers:
        thread.start()
    try:
        seen = watch(prometheus, {"GatewayLatencyBudgetBurn"}, lambda alerts: firing(
            alerts, "GatewayLatencyBudgetBurn", type="query", window="1h"))
    finally:
        stop.set()
        stack.services.clear_faults()
        for thread in callers:
            thread.join(15)
    assert seen["GatewayLatencyBudgetBurn"][:2] == ["pending", "firing"], seen
    assert not [a for a in prometheus.alerts("GatewayLatencyBudgetBurn")
                if a["labels"]["type"] != "query"]


def test_an_outage_takes_its_alerts_from_pending_to_firing(stack: Stack) -> None:
    prometheus = stack.prometheus
    outage = {"GatewayAvailabilityBudgetBurn", "GatewayCircuitOpen",
              "GatewayRetryBudgetExhausted"}
    # Before: none of them pending or firing.
    prometheus.wait(lambda: prometheus.query("gateway:slo_availability_errors:ratio_rate5m"),
                    "the availability ratio")
    assert not [a for name in outage for a in prometheus.alerts(name)]
    stack.services.set_faults("catalog", error_rate=1.0, error_status=503)
    try:
        seen = watch(prometheus, outage, lambda alerts: all((
            firing(alerts, "GatewayAvailabilityBudgetBurn", window="1h"),
            firing(alerts, "GatewayCircuitOpen", service="catalog"),
            firing(alerts, "GatewayRetryBudgetExhausted", service="catalog"))))
    finally:
        stack.services.clear_faults()
    for name, states in seen.items():
        assert states[:2] == ["pending", "firing"], (name, seen)
    # The alerts say which service, and where their runbook is.
    # (The orders service, which reads prices from catalog, may fail with it.)
    opened = [a for a in prometheus.alerts("GatewayCircuitOpen") if a["state"] == "firing"]
    [breaker] = [a for a in opened if a["labels"]["service"] == "catalog"]
    assert {a["labels"]["service"] for a in opened} <= {"catalog", "orders"}
    assert breaker["annotations"]["runbook_url"] == "docs/runbooks/GatewayCircuitOpen.md"
    assert (ROOT / breaker["annotations"]["runbook_url"]).exists()


def test_a_killed_worker_fires_worker_restarting(stack: Stack) -> None:
    prometheus = stack.prometheus
    assert not prometheus.alerts("GatewayWorkerRestarting")
    supervisor = stack.gateway.process.proc.pid
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    assert len(children) == 2
    os.kill(int(children[0]), signal.SIGKILL)
    seen = watch(prometheus, {"GatewayWorkerRestarting"},
                 lambda alerts: firing(alerts, "GatewayWorkerRestarting"))
    # No `for:`: a restart is news at once.
    assert seen["GatewayWorkerRestarting"] == ["firing"]
    prometheus.wait(lambda: listeners(stack.gateway.port) == 2, "the new worker listens")
    [restarts] = prometheus.query("sum(gateway_worker_restarts_total)")
    assert float(restarts["value"][1]) == 1


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel.get("targets", ())]


def grafana(expr: str) -> str:
    """The expression as Grafana sends it, with every replica and operation selected."""
    return (expr.replace("$__rate_interval", RATE_INTERVAL)
            .replace('=~"$instance"', '=~".*"').replace('=~"$operation"', '=~".*"'))


def test_every_dashboard_query_parses_and_returns_series(stack: Stack) -> None:
    prometheus = stack.prometheus
    # A fault of the reviews service: retries, refusals and breaker openings have series.
    stack.services.set_faults("reviews", error_rate=1.0, error_status=503)
    try:
        prometheus.wait(lambda: prometheus.query(
            'gateway_circuit_opened_total{service="reviews"}'), "the reviews breaker opened")
    finally:
        stack.services.clear_faults()
    queries = dashboard_queries()
    assert len(queries) >= 25
    empty = []
    for title, expr in queries:
        assert "$" not in grafana(expr), expr
        # Parses (a 400 otherwise) and returns series, after a few scrapes at most.
        deadline = time.monotonic() + 20
        while not prometheus.query(grafana(expr)) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not prometheus.query(grafana(expr)):
            empty.append((title, expr))
    assert not empty, empty
    # The variables: label_values(metric, label), as Grafana asks for them.
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        [(metric, label)] = re.findall(r"label_values\((\w+).*?, (\w+)\)$",
                                       variable["query"]["query"])
        values = prometheus.api(f"label/{label}/values", **{"match[]": metric})
        assert values, variable["name"]


def test_a_stalled_redis_takes_redis_degraded_from_pending_to_firing(stack: Stack) -> None:
    prometheus = stack.prometheus
    # (On a loaded machine a Redis call may pass its 100 ms and count as a short outage:
    # start from a quiet state.)
    prometheus.wait(lambda: not prometheus.alerts("GatewayRedisDegraded"),
                    "no GatewayRedisDegraded before the stall")
    assert stack.redis.process is not None
    os.kill(stack.redis.process.pid, signal.SIGSTOP)  # the gateway's next call times out
    try:
        seen = watch(prometheus, {"GatewayRedisDegraded"},
                     lambda alerts: firing(alerts, "GatewayRedisDegraded"))
    finally:
        os.kill(stack.redis.process.pid, signal.SIGCONT)
    assert seen["GatewayRedisDegraded"][:2] == ["pending", "firing"], seen
    # Redis back: the alert resolves (the gateway's probe finds it within a second).
    prometheus.wait(lambda: not prometheus.alerts("GatewayRedisDegraded"),
                    "GatewayRedisDegraded resolved")


def test_a_latency_exemplar_leads_to_a_trace(stack: Stack) -> None:
    """Issue 20 point 5: with exemplars in the gateway's OpenMetrics exposition, Prometheus
    (with exemplar storage) returns a latency bucket's trace id."""
    status, _, text = http("GET", stack.metrics_url + "/metrics",
                                 headers={"Accept": "application/openmetrics-text"})
    assert status == 200
    if " # {" not in str(text):
        pytest.skip("the gateway sends no exemplars yet (issue 20 point 5, branch sre-metrics)")
    now = time.time()

    def exemplars() -> list[dict[str, Any]]:
        return [e for series in stack.prometheus.api(
                    "query_exemplars", query="gateway_request_duration_seconds_bucket",
                    start=str(now - 600), end=str(time.time() + 1))
                for e in series["exemplars"]]

    found = stack.prometheus.wait(exemplars, "an exemplar of the request latency")
    # (Whatever the exemplar's label is called: trace_id, traceID...)
    trace_ids = {value for e in found for value in e["labels"].values()
                 if re.fullmatch(r"[0-9a-f]{32}", value)}
    assert trace_ids, found
    # The trace id is the one the request's access log line carries.
    assert trace_ids & {line.get("trace_id") for line in log_lines(stack.gateway)}


def log_lines(gateway: Gateway) -> list[dict[str, Any]]:
    """The gateway's JSON log lines (the console exporter's spans, over several lines, are
    not)."""
    lines = []
    for raw in gateway.process.log().splitlines():
        if raw.startswith('{"'):
            try:
                lines.append(json.loads(raw))
            except ValueError:
                pass
    return lines
