"""Apollo Client (@apollo/client 4, run with Node.js): BatchHttpLink's batches are answered
per operation, in order, and their lookups still batch together (issue 18, point 3)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.clients.conftest import node_with
from tests.harness import ROOT, Gateway, Services

HERE = Path(__file__).parent


def test_batch_http_link_sends_one_post_and_gets_each_answer(
        cgateway: Gateway, cservices: Services) -> None:
    node = node_with("@apollo/client", "graphql", "rxjs")
    ids = ["p3", "p1", "p2"]
    cservices.reset_stats()
    run = subprocess.run([node, str(HERE / "apollo_batch.mjs"), cgateway.url + "/graphql", *ids],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["posts"] == 1  # the four operations went out together
    assert [p["id"] for p in out["products"]] == ids  # each answer to its own query
    assert all(p["name"] and len(p["reviews"]) <= 2 for p in out["products"])
    # The refused operation is the client's error for that query alone.
    assert out["invalid"]["data"] is None
    assert out["invalid"]["error"]["codes"] == ["GRAPHQL_VALIDATION_FAILED"], out["invalid"]
    # One catalog call for the three products, one reviews call for their reviews.
    stats = cservices.stats("catalog")["requests"]
    assert stats.get("GET /products") == 1, stats
    assert cservices.stats("reviews")["requests"].get("GET /reviews") == 1
