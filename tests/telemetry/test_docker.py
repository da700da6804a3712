"""docker/: two gateway replicas behind one load balancer, sharing Redis and settings the
gateway accepts, exporting to Jaeger, scraped one by one by Prometheus, and charted by a
Grafana dashboard whose queries name only metrics the gateway has. `docker compose config`
checks the compose file itself where the tool exists."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from pathlib import PurePosixPath
from typing import Any

import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from strawberry.http.ides import get_graphql_ide_html

from app.config.settings import Settings
from app.http.ide import CDN_URL
from app.telemetry import metrics
from tests.harness import ROOT, require

DOCKER = ROOT / "docker"
REPLICAS = ("gateway-1", "gateway-2")
# What the stack is started with (docker/README.md): secrets of its own, from the environment.
STACK_ENV = {"EVENT_SECRET": "compose-event-secret-0123456789abcdef0123456789",
             "AUTH_JWT_SECRET": "compose-jwt-secret-0123456789abcdef0123456789"}
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]*\}")  # ${NAME:?message}: compose interpolates it


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as compose hands it over, with STACK_ENV set."""
    return {k: REQUIRED.sub(lambda m: STACK_ENV[m.group(1)], str(v))
            for k, v in service["environment"].items()}


def mount(service: dict[str, Any], source: str) -> str:
    """Where `service` mounts `source` (a path relative to docker/)."""
    [target] = [volume.split(":")[1] for volume in service["volumes"]
                if volume.split(":")[0] == source]
    return target


def replica_settings(env: dict[str, str]) -> Settings:
    """The settings a replica starts with: its profile file (the image's copy of config/)
    under its environment."""
    dockerfile = (DOCKER / "Dockerfile").read_text()
    workdir = re.findall(r"^WORKDIR (\S+)", dockerfile, flags=re.M)[-1]  # the final stage's
    assert re.search(r"^COPY config config$", dockerfile, flags=re.M)
    profile = ROOT / PurePosixPath(env["GATEWAY_SETTINGS_FILE"]).relative_to(workdir)
    settings = Settings.from_env({**env, "GATEWAY_SETTINGS_FILE": str(profile)})
    settings.check_deployable()  # what the replica checks as it starts: no published secret
    return settings


def test_two_replicas_with_the_same_settings_share_redis_and_export_to_jaeger() -> None:
    services = compose()["services"]
    assert {*REPLICAS, "lb", "services", "redis", "jaeger", "prometheus", "grafana"} <= set(
        services)
    envs = [environment(services[name]) for name in REPLICAS]
    settings = [replica_settings(env) for env in envs]  # values every replica starts with
    assert settings[0] == settings[1]
    first = settings[0]
    assert envs[0]["GATEWAY_SETTINGS_FILE"] == "/srv/config/production.toml"
    # Production, but explorable: the IDE and introspection, development tokens, no DEV_MODE.
    assert not first.dev_mode and first.graphql_ide and first.introspection
    assert first.auth_jwt_secret and first.log_format == "json"
    # One Redis for both: entity cache, invalidation, rate limits, persisted queries.
    assert first.redis_url == "redis://redis:6379/0" and "redis" in services
    for name in ("users", "catalog", "inventory", "orders", "reviews", "recommendations"):
        assert re.fullmatch(r"http://services:800[1-6]", first.service_url(name))
    for name in REPLICAS:
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile"
        assert "ports" not in services[name]  # reached through the load balancer only

    otlp = envs[0]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert otlp == "http://jaeger:4318"  # Jaeger's OTLP/HTTP port
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert services["services"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == otlp


def test_the_services_send_change_events_to_every_replica() -> None:
    services = compose()["services"]
    env = environment(services["services"])
    assert env["EVENT_WEBHOOKS"].split(",") == [f"http://{r}:8000/events" for r in REPLICAS]
    for name in REPLICAS:
        assert replica_settings(environment(services[name])).event_secret == env["EVENT_SECRET"]


def test_the_load_balancer_forwards_port_8000_to_both_replicas() -> None:
    lb = compose()["services"]["lb"]
    assert lb["ports"] == ["8000:8000"]
    assert mount(lb, "./nginx.conf") == "/etc/nginx/conf.d/default.conf"
    conf = (DOCKER / "nginx.conf").read_text()
    [(name, body)] = re.findall(r"upstream (\w+) \{(.*?)\}", conf, flags=re.S)
    servers = re.findall(r"^\s*server (\S+?)[\s;]", body, flags=re.M)
    assert sorted(servers) == [f"{r}:8000" for r in REPLICAS]
    assert re.search(rf"proxy_pass http://{name};", conf)
    assert re.search(r"listen 8000;", conf)
    # The replicas trust X-Forwarded-For from nginx's address alone (TRUSTED_PROXIES): nginx
    # must set it, never pass on a caller's own, or a caller would pick its rate-limit bucket.
    assert re.search(r"proxy_set_header X-Forwarded-For \$remote_addr;", conf)
    services = compose()["services"]
    address = lb["networks"]["default"]["ipv4_address"]
    [subnet] = compose()["networks"]["default"]["ipam"]["config"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet["subnet"])
    for name in REPLICAS:
        assert replica_settings(environment(services[name])).proxies() == [f"{address}/32"]


def test_the_stack_takes_its_secrets_from_the_environment() -> None:
    """Compose refuses to start without them; none is written in the file."""
    text = (DOCKER / "compose.yaml").read_text()
    assert set(REQUIRED.findall(text)) == {"EVENT_SECRET", "AUTH_JWT_SECRET"}
    assert "dev-" not in text and "change-me" not in text


def test_prometheus_scrapes_each_replica() -> None:
    services = compose()["services"]
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    # On the replicas' metrics port: the public one does not serve /metrics.
    port = replica_settings(environment(services[REPLICAS[0]])).metrics_port
    assert port and port != 8000
    assert sorted(job["static_configs"][0]["targets"]) == [f"{r}:{port}" for r in REPLICAS]
    assert mount(services["prometheus"], "./prometheus.yml") == "/etc/prometheus/prometheus.yml"
    # The SLO and cause rules of ops/prometheus, evaluated by the stack's Prometheus.
    rules = mount(services["prometheus"], "../ops/prometheus")
    assert prometheus["rule_files"] == [f"{rules}/*.rules.yml"]
    assert list((ROOT / "ops" / "prometheus").glob("*.rules.yml"))


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard() -> None:
    grafana = compose()["services"]["grafana"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"])  # pinned
    assert mount(grafana, "./grafana/provisioning") == "/etc/grafana/provisioning"
    dashboards_dir = mount(grafana, "./grafana/dashboards")

    provisioning = DOCKER / "grafana" / "provisioning"
    [datasource] = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load(
        (provisioning / "dashboards" / "gateway.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == dashboards_dir

    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "gateway.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        for source in (panel["datasource"], *(t["datasource"] for t in panel["targets"])):
            assert source == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]


# PromQL's functions, aggregations and keywords, as the dashboard uses them.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "topk", "bottomk", "rate", "irate", "increase",
    "histogram_quantile", "scalar", "by", "without", "on", "ignoring", "and", "or", "unless",
}
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """The series names and the label names a PromQL expression uses."""
    labels: set[str] = set()

    def matchers(match: re.Match[str]) -> str:
        labels.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", match.group(1)))
        return " "

    def grouping(match: re.Match[str]) -> str:
        labels.update(re.findall(r"\w+", match.group(1)))
        return " "

    expr = re.sub(r"\{([^}]*)\}", matchers, expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges: [5m], [$__rate_interval]
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", grouping, expr)
    return set(re.findall(r"[A-Za-z_:][\w:]*", expr)) - PROMQL_WORDS, labels


def gateway_series() -> dict[str, set[str]]:
    """Every series the gateway exposes, with its labels. Names come from the exposition
    Prometheus scrapes; labels from the metric objects, since a labelled metric that nothing
    has used yet exposes no sample to read them from."""
    labels = {m._name: set(m._labelnames) for m in vars(metrics).values()
              if isinstance(m, MetricWrapperBase)}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    series = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        own = labels.get(family.name, set())
        for suffix in suffixes.get(family.type, ("",)):
            series[family.name + suffix] = own | ({"le"} if suffix == "_bucket" else set())
    return series


def recorded_series() -> dict[str, set[str]]:
    """The series the recording rules of ops/prometheus make, with their labels (the rule's
    own and those it aggregates by)."""
    series: dict[str, set[str]] = {}
    for path in (ROOT / "ops" / "prometheus").glob("*.rules.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    by = re.findall(r"\bby\s*\(([^)]*)\)", rule["expr"])
                    series.setdefault(rule["record"], set()).update(
                        rule.get("labels", {}), *(re.findall(r"\w+", b) for b in by))
    return series


def test_the_dashboard_queries_only_metrics_and_labels_the_gateway_has() -> None:
    # The parser itself: a name it missed would pass unchecked.
    assert promql_names('sum by (le, x) (rate(gateway_nope_total{y=~"$a"}[5m])) / scalar(up)'
                        ) == ({"gateway_nope_total", "up"}, {"le", "x", "y"})
    series = gateway_series()
    assert {"gateway_requests_total", "gateway_upstream_duration_seconds_bucket",
            "gateway_circuit_state"} <= set(series)
    # And the SLO panels' recorded series (whose values tests/ops checks in a Prometheus).
    assert recorded_series()["gateway:slo_latency_slow:ratio_rate5m"] == {"type"}
    series |= recorded_series()

    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "gateway.json").read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            names, labels = promql_names(target["expr"])
            assert names and names <= set(series), (panel["title"], names - set(series))
            known = set.union(TARGET_LABELS, *(series[n] for n in names))
            assert labels <= known, (panel["title"], labels - known)
            used |= names
    for variable in dashboard["templating"]["list"]:
        [(name, label)] = re.findall(r"label_values\((\w+)\W.*?(\w+)\)$",
                                     variable["query"]["query"])
        assert label in series[name] | TARGET_LABELS, variable["name"]
    # The charts the issue asks for: requests, latency, upstreams, breakers, cache, batches.
    assert {"gateway_requests_total", "gateway_request_duration_seconds_bucket",
            "gateway_upstream_calls_total", "gateway_upstream_duration_seconds_bucket",
            "gateway_upstream_retries_total", "gateway_circuit_state",
            "gateway_cache_events_total", "gateway_loader_batch_size_bucket"} <= used


def test_the_images_copy_what_exists_and_run_unprivileged() -> None:
    for name in ("Dockerfile", "Dockerfile.services"):
        text = (DOCKER / name).read_text()
        for line in re.findall(r"^COPY (.+)$", text, flags=re.M):
            *sources, _ = line.split()
            if sources[0].startswith("--from="):
                continue  # from a build stage, not the repository
            for source in sources:
                assert (ROOT / source).exists(), (name, source)
        assert re.search(r"^USER (?!root)\w+", text, flags=re.M), name
        assert "HEALTHCHECK" in text


def compose_command() -> list[str] | None:
    """`docker compose` (the plugin) or `docker-compose`, whichever is installed."""
    if shutil.which("docker") and subprocess.run(
            ["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_accepts_the_file() -> None:
    command = compose_command()
    require(command is not None, "docker compose or docker-compose")
    assert command is not None
    result = subprocess.run([*command, "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, **STACK_ENV})
    assert result.returncode == 0, result.stderr
    unset = {k: v for k, v in os.environ.items() if k not in STACK_ENV}
    result = subprocess.run([*command, "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
                            capture_output=True, text=True, timeout=60, env=unset)
    assert result.returncode != 0 and "EVENT_SECRET" in result.stderr


def test_the_gateway_image_serves_the_ide_from_its_own_copy_of_the_assets() -> None:
    """The image's IDE works offline too: its build stage keeps every file the page loads."""
    text = (DOCKER / "Dockerfile").read_text()
    named = CDN_URL.findall(get_graphql_ide_html("graphiql"))
    assert named
    for package, _, file in named:
        assert f" {package}/{file} " in text and f" {package}/package.json " in text, file
    assert "COPY --from=ide-assets /ide /srv/ide" in text
    assert re.search(r"^ENV IDE_ASSETS_DIR=/srv/ide$", text, flags=re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "node_modules", ".git"} <= set(ignored)  # a small build context
