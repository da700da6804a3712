"""Circuit breakers: a failing service is left alone, and found again when it is back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.harness import Gateway, Services, free_port, start_services
from tests.resilience.conftest import Post, metric, readyz

QUERY = '{ product(id: "p1") { id name } user(id: "u1") { id name } }'
# Open for 3 s: long enough for the checks made while it is open, on a slow machine.
BREAKER = {"BREAKER_MIN_CALLS": "5", "BREAKER_OPEN_S": "3", "BREAKER_PROBES": "2"}


async def test_down_service_opens_the_breaker_which_closes_when_it_is_back(
    start: Callable[..., Gateway], rservices: Services, rtmp: Path, post: Post
) -> None:
    # The users service runs in a process of its own, so that it can really go down
    # (connection refused) and come back on the same port.
    port = free_port()
    only_users = dict(ONLY="users", USERS_PORT=str(port))
    users = start_services(rtmp / "users", env=only_users, ports={"users": port})
    split = Services(process=rservices.process, ports={**rservices.ports, "users": port})
    gateway = start(split, **BREAKER)
    assert "errors" not in (await post(gateway, QUERY)).body
    assert readyz(gateway)["services"]["users"] == {"reachable": True, "breaker": "closed"}

    users.stop()
    seen = []
    for _ in range(10):
        reply = await post(gateway, QUERY)
        # Whatever happens to users, the product stands.
        assert reply.body["data"]["product"]["id"] == "p1"
        assert reply.body["data"]["user"] is None
        seen.append(reply.codes()[0])
    # Refused connections until the window holds 5 failures, then the breaker is open.
    assert seen[0] == "UPSTREAM_UNAVAILABLE" and seen[-1] == "CIRCUIT_OPEN", seen
    # No network call: a listener on the users port, counting connections, gets none.
    connections: list[object] = []

    def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(reader)
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", port)
    try:
        opened = await post(gateway, QUERY)
    finally:
        listener.close()
        await listener.wait_closed()
    call = next(c for c in opened.calls if c["service"] == "users")
    assert call["code"] == "CIRCUIT_OPEN" and call["retries"] == 0
    assert connections == [], "the open breaker let a call reach the users port"
    ext = opened.body["errors"][0]["extensions"]
    assert len(ext.pop("traceId")) == 32
    assert ext == {"code": "CIRCUIT_OPEN", "service": "users", "retryable": True, "retries": 0,
                   "paths": [["user"]]}
    await asyncio.sleep(0.3)  # readiness probes are reused for 0.25 s
    state = readyz(gateway)
    assert state["services"]["users"] == {"reachable": False, "breaker": "open"}
    assert state["status"] == "degraded"
    assert metric(gateway, "gateway_circuit_state", service="users") == 2
    assert metric(gateway, "gateway_circuit_opened_total", service="users") == 1

    users = start_services(rtmp / "users", env=only_users, ports={"users": port})
    try:
        await asyncio.sleep(3.1)  # BREAKER_OPEN_S: then probes go through
        replies = [await post(gateway, QUERY) for _ in range(3)]
        assert all("errors" not in r.body for r in replies), [r.body for r in replies]
        assert readyz(gateway)["services"]["users"]["breaker"] == "closed"
        assert metric(gateway, "gateway_circuit_state", service="users") == 0
    finally:
        users.stop()


async def test_open_breaker_sends_nothing_and_a_failed_probe_reopens_it(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    gateway = start(**BREAKER)
    faults.set_faults("catalog", error_rate=1.0, error_status=503)
    # The breaker counts calls, each once after its retries: 4 failed calls are below
    # BREAKER_MIN_CALLS (5 here), however many attempts they made; the fifth opens it.
    for _ in range(4):
        await post(gateway, QUERY)
    assert readyz(gateway)["services"]["catalog"]["breaker"] == "closed"
    assert faults.stats("catalog")["requests"]["GET /products"] > 4  # retried
    await post(gateway, QUERY)
    assert readyz(gateway)["services"]["catalog"]["breaker"] == "open"
    faults.reset_stats()
    replies = await asyncio.gather(*(post(gateway, QUERY) for _ in range(20)))
    assert all(r.codes() == ["CIRCUIT_OPEN"] for r in replies)
    assert all(r.body["data"]["user"]["id"] == "u1" for r in replies)  # users unaffected
    assert faults.stats("catalog")["requests"] == {}  # not one request reached it
    # Still failing when the probe goes out: open again, one probe sent.
    await asyncio.sleep(3.1)
    probe = await post(gateway, QUERY)
    assert probe.codes() == ["UPSTREAM_UNAVAILABLE"]
    assert readyz(gateway)["services"]["catalog"]["breaker"] == "open"
    assert faults.stats("catalog")["requests"] == {"GET /products": 1}
    assert metric(gateway, "gateway_circuit_opened_total", service="catalog") == 2
