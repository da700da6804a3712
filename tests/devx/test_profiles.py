"""The two profiles are settings files for the same code: what a caller sees of each."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.devx.conftest import ask
from tests.harness import ROOT, Gateway, free_port, http, token

INTROSPECT = "{ __schema { queryType { name } } }"
ME = "{ me { id } }"


def test_production_trusts_only_tokens_and_publishes_no_ide_or_schema(
        start: Callable[..., Gateway]) -> None:
    metrics_port = free_port()  # (the profile's 9100 may be taken on a shared machine)
    gateway = start(GATEWAY_SETTINGS_FILE=str(ROOT / "config" / "production.toml"),
                    DEV_MODE=None, RATE_LIMIT_ENABLED=None, METRICS_PORT=str(metrics_port))
    status, _, page = http("GET", gateway.url + "/graphql", headers={"Accept": "text/html"})
    assert status == 404 and page["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    _, _, body = ask(gateway, INTROSPECT)
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert ask(gateway, ME, headers={"X-User-Id": "u1"})[2]["data"] == {"me": None}
    _, headers, body = ask(gateway, ME, headers={"X-Gateway-Debug": "1",
                                                 "Authorization": f"Bearer {token('u1')}"})
    assert body["data"] == {"me": {"id": "u1"}} and "debug" not in body.get("extensions", {})
    assert "max-age" in headers["strict-transport-security"]
    assert "ratelimit-limit" in headers  # rate limits on
    access = [json.loads(line) for line in gateway.process.log().splitlines()
              if line.startswith("{") and '"message":"request"' in line]
    assert access and all(len(entry["trace_id"]) == 32 for entry in access)  # JSON logs
    # /metrics only on the metrics port, for the scraper.
    assert http("GET", gateway.url + "/metrics")[0] == 404
    assert http("GET", f"http://127.0.0.1:{metrics_port}/metrics")[0] == 200


def test_development_is_the_ide_with_x_user_id_and_readable_logs(gateway: Gateway) -> None:
    status, _, page = http("GET", gateway.url + "/graphql", headers={"Accept": "text/html"})
    assert status == 200 and "graphiql" in page.lower()
    assert ask(gateway, INTROSPECT)[2]["data"]["__schema"]["queryType"]["name"] == "Query"
    assert ask(gateway, ME, headers={"X-User-Id": "u1"})[2]["data"] == {"me": {"id": "u1"}}
    _, headers, body = ask(gateway, ME, headers={"X-Gateway-Debug": "1", "X-User-Id": "u1"})
    assert body["extensions"]["debug"]["resolvers"]
    assert "strict-transport-security" not in headers
    log = gateway.process.log()
    assert "DEVELOPMENT MODE" in log and not any(
        line.startswith("{") for line in log.splitlines())
