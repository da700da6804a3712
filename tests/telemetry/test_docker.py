"""docker/: the compose file wires the gateway to Jaeger and Prometheus with settings the
gateway accepts. `docker compose config` checks the file itself where the tool exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from app.settings import Settings
from tests.harness import ROOT

DOCKER = ROOT / "docker"


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_the_gateway_exports_to_jaeger_and_prometheus_scrapes_it() -> None:
    services = compose()["services"]
    assert {"gateway", "services", "redis", "jaeger", "prometheus"} <= set(services)
    env = {k: str(v) for k, v in services["gateway"]["environment"].items()}
    Settings.from_env(env)  # every value is one the gateway starts with
    otlp = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert otlp == "http://jaeger:4318"  # Jaeger's OTLP/HTTP port
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert services["services"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == otlp
    for name in ("users", "catalog", "inventory", "orders", "reviews", "recommendations"):
        assert re.fullmatch(r"http://services:800[1-6]", env[f"{name.upper()}_URL"])
    assert services["gateway"]["ports"] == ["8000:8000"]

    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["gateway:8000"]
    mount = services["prometheus"]["volumes"][0]
    assert mount.startswith("./prometheus.yml:")


def test_the_images_copy_what_exists_and_run_unprivileged() -> None:
    for name in ("Dockerfile", "Dockerfile.services"):
        text = (DOCKER / name).read_text()
        for source in re.findall(r"^COPY (\S+)", text, flags=re.M):
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
    if command is None:
        pytest.skip("neither docker compose nor docker-compose is installed")
    result = subprocess.run([*command, "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
