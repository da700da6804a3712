"""Metrics as an attack surface: anonymous callers cannot push real operation names out of
the bounded label set with made-up ones, and `/metrics` can be kept off the public port."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp

from app.telemetry.metrics import MAX_OPERATION_NAMES
from tests.harness import Gateway, free_port, http, metric_total, sample_total, token
from tests.security.conftest import call

FLOOD = MAX_OPERATION_NAMES + 10  # the 210 of the issue


async def test_made_up_anonymous_operation_names_do_not_crowd_out_real_ones(
        start: Callable[..., Gateway], tmp_path: Path) -> None:
    public = "query PublicTopProducts { __typename }"
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({hashlib.sha256(public.encode()).hexdigest(): public}))
    gateway = start(PERSISTED_QUERIES_FILE=str(manifest))  # a fresh process: no names yet
    async with aiohttp.ClientSession() as session:
        for n in range(FLOOD):  # anonymous, each its own name, nothing upstream
            assert (await call(session, gateway, f"query Junk{n} {{ __typename }}")).status \
                == 200
        # A signed-in client's operation, and a deployed (persisted) one sent anonymously.
        await call(session, gateway, "query CheckoutPage { __typename }",
                   token=token("u1", "read:orders"))
        digest = hashlib.sha256(public.encode()).hexdigest()
        async with session.post(gateway.url + "/graphql", json={"extensions": {
                "persistedQuery": {"version": 1, "sha256Hash": digest}}}) as resp:
            assert resp.status == 200, await resp.text()
        # Once admitted, a name is its own label whoever sends it.
        await call(session, gateway, "query CheckoutPage { __typename }")
    _, _, text = http("GET", gateway.url + "/metrics")
    assert sample_total(text, "gateway_requests_total", operation="CheckoutPage") == 2
    assert sample_total(text, "gateway_requests_total", operation="PublicTopProducts") == 1
    assert sample_total(text, "gateway_requests_total", operation="other") == FLOOD
    assert "Junk" not in text


def test_metrics_on_their_own_port_are_not_served_on_the_public_one(
        start: Callable[..., Gateway]) -> None:
    port = free_port()
    gateway = start(METRICS_PORT=str(port))
    http("POST", gateway.url + "/graphql", {"query": "query Counted { __typename }"},
         {"Authorization": f"Bearer {token('u1')}"})
    assert http("GET", gateway.url + "/metrics")[0] == 404
    metrics_url = f"http://127.0.0.1:{port}"
    assert metric_total(metrics_url, "gateway_requests_total", operation="Counted") == 1
    # The metrics port serves nothing else.
    assert http("POST", metrics_url + "/graphql", {"query": "{ __typename }"})[0] == 404
