"""A failure of the gateway's own before execution is its error, not the client's: 500 in
application/graphql-response+json, outcome `error` in the metrics, and masked."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from app.cache.hints import CacheHints
from tests.harness import sample_total

# Named: the in-process gateways of this package share one metrics registry.
QUERY = "query BrokenProbe { __typename }"


async def test_an_internal_failure_before_execution_is_a_500_and_counted_as_error(
    launch: Any, http_session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await launch()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the gateway")

    monkeypatch.setattr(CacheHints, "operation_policy", broken)
    for accept, status in (("application/graphql-response+json", 500),
                           ("application/json", 200)):
        async with http_session.post(gw.url + "/graphql", json={"query": QUERY},
                                     headers={"Accept": accept}) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == status, accept
            assert resp.headers["Content-Type"].startswith(accept)
        [error] = body["errors"]
        assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
        assert "a bug" not in error["message"]  # masked
    async with http_session.get(gw.url + "/metrics") as resp:
        text = await resp.text()
    counted = {outcome: sample_total(text, "gateway_requests_total", operation="BrokenProbe",
                                     outcome=outcome) for outcome in ("error", "refused")}
    assert counted == {"error": 2, "refused": 0}
