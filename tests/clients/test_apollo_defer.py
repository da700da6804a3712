"""Apollo Client (@apollo/client 4, run with Node.js): HttpLink with @defer reads the
gateway's incremental answer, first the page without its deferred parts, then the whole
page (issue 18, points 2 and 4)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.clients.conftest import node_with
from tests.harness import ROOT, Gateway, Services, token

HERE = Path(__file__).parent


def test_http_link_sees_the_first_part_then_the_completed_page(
        cgateway: Gateway, cservices: Services) -> None:
    node = node_with("@apollo/client", "graphql", "rxjs")
    cservices.set_faults("recommendations", latency_ms=200)  # the slow service
    try:
        run = subprocess.run([node, str(HERE / "apollo_defer.mjs"), cgateway.url + "/graphql",
                              token("u1"), "p1"],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
    finally:
        cservices.set_faults("recommendations", latency_ms=0)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    # The link asked for incremental delivery in the format the gateway sends.
    assert out["accept"].startswith("multipart/mixed;incrementalSpec=v0.2"), out["accept"]
    assert out["contentType"].startswith("multipart/mixed"), out
    results = [r for r in out["results"] if r["data"]]
    assert all(r["error"] is None for r in out["results"]), out["results"]
    first, last = results[0], results[-1]
    # First what is not deferred: the product and who the caller is, still streaming...
    assert first["dataState"] == "streaming"
    assert first["data"]["product"]["name"] and first["data"]["me"]["id"] == "u1"
    assert "recommendations" not in first["data"]["me"]
    # ...then the completed page, deferred parts merged in.
    assert last["dataState"] == "complete" and last["loading"] is False
    assert last["data"]["me"]["recommendations"]
    assert isinstance(last["data"]["product"]["reviews"], list)
    assert last["data"]["product"]["name"] == first["data"]["product"]["name"]
