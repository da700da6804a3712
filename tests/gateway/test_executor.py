"""The plan executor answers exactly as graphql-core's executor does.

Two gateways on the same services, one with each executor, get the same operations, some
under injected failures; their responses must be the same bytes (orjson's serialization of
each body: data and its key order, errors with their messages and paths, in the canonical
form `canonical` gives what graphql-core leaves to timing: their order, and which errors
under a propagated null get in).

The operations are drawn by Hypothesis from the served schema (tests/gateway/querygen.py):
500 in `make test` (derandomized, so a run is repeatable); `make fuzz` draws many more at
random (FUZZ_EXAMPLES). Every divergence found is fixed and kept below as a fixed case.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from http.client import HTTPConnection, HTTPException
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from graphql import FragmentDefinitionNode, OperationDefinitionNode, parse, validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.execution.limits import measure
from schema import build_schema
from tests.gateway.querygen import queries
from tests.harness import Gateway, Services, http, start_gateway

SCHEMA = build_schema()._schema
# The gateway's default limits (app/config/settings.py): the drawn queries stay within them.
LIMITS = {"depth": 12, "aliases": 30, "cost": 10_000}
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or 0)
# Deterministic faults, the same for both gateways: every call to the service fails alike.
FAULTS: list[tuple[str, dict[str, Any]] | None] = [None] * 12 + [
    (service, fault)
    for service in ("users", "catalog", "inventory", "reviews", "recommendations", "orders")
    for fault in ({"error_rate": 1.0, "error_status": 503},
                  {"error_rate": 1.0, "error_status": 500},
                  {"bad_body_rate": 1.0, "bad_body": "html"},
                  {"bad_body_rate": 1.0, "bad_body": "truncated"},
                  {"bad_body_rate": 1.0, "bad_body": "wrong_types"})
]
CLEAR = {"error_rate": 0.0, "bad_body_rate": 0.0}

# Divergences the generated queries found, fixed in the plan executor: (document,
# variables, fault, user).
REGRESSIONS: list[tuple[str, dict[str, Any] | None, tuple[str, dict[str, Any]] | None,
                        str | None]] = [
    # Response keys in selection order, not in the order the values were at hand.
    ("{ topProducts(first: 1) { name id inStock price { currency amount } name2: name } }",
     None, None, None),
    # A null propagated by a value at hand (an out-of-range `first` under a non-null list)
    # takes its object before the awaited fields beside it complete; their errors (here the
    # reviews service's, with the field's fallback) are not reported, as in graphql-core,
    # which cancels them. (`canonical` would now accept either; the executor still matches.)
    ('{ user(id: "u1") { reviews { id } bad: reviews(first: -1) { id } } }', None,
     ("reviews", {"error_rate": 1.0, "error_status": 503}), None),
    # One failed batch, reported once with every path: graphql-core lists the paths in the
    # order its fields happened to complete (see `canonical`).
    ('{ products(ids: ["p1", "p-none", "p2", "p1"]) { inStock } }', None,
     ("inventory", {"error_rate": 1.0, "error_status": 503}), None),
    # An error at hand nulls the data while an awaited sibling fails too: graphql-core
    # cancels the sibling before it fails or not, by timing (see `canonical`).
    ('{ a: product(id: "p-none") { id } b: topProducts(first: -1) { id } }', None,
     ("catalog", {"bad_body_rate": 1.0, "bad_body": "truncated"}), None),
    # Lookups of two lists' stock: one batch in the plan executor, one or two in graphql-core
    # (by timing), so one error with three paths or two errors (see `canonical`).
    ('{ a: products(ids: ["p1", "p1"]) { inventory { sku } } '
     'b: topProducts(first: 1) { inventory { sku } } }', None,
     ("inventory", {"bad_body_rate": 1.0, "bad_body": "html"}), "u7"),
    # Private fields (permission classes) are planned too: the viewer's own, then someone
    # else's (FORBIDDEN: null, or the empty list and page of their fallbacks), and orders.
    ("{ me { id email orders(first: 2) { edges { node { id status } } } "
     "recommendations(first: 2) { id name } } }", None, None, "u7"),
    ('{ user(id: "u1") { id email orders(first: 1) { edges { node { id } } } '
     'recommendations { id } } order(id: "o1") { id status } }', None, None, "u7"),
    ('{ user(id: "u7") { email } order(id: "o1") { id } }', None, None, None),
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, services: Services
         ) -> Iterator[tuple[Gateway, Gateway]]:
    tmp = tmp_path_factory.mktemp("executors")
    # Both make the same upstream calls: no entity cache, no response cache; a failure is
    # final (no retries, no breaker opening in one gateway and not yet in the other).
    env = {"CACHE_ENABLED": "false", "RESPONSE_CACHE": "false", "BREAKER_ENABLED": "false",
           "RETRY_MAX_ATTEMPTS": "1"}
    plan = start_gateway(tmp, services, env=env)
    core = start_gateway(tmp, services, env={**env, "PLAN_EXECUTOR": "false"})
    yield plan, core
    plan.stop()
    core.stop()


class Client:
    """One kept-alive connection to a gateway; returns a response's status and body."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.connection = HTTPConnection(self.host, self.port, timeout=30)

    def post(self, payload: dict[str, Any], user: str | None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if user is not None:
            headers["X-User-Id"] = user
        body = orjson.dumps(payload)
        for attempt in range(2):
            try:
                self.connection.request("POST", "/graphql", body, headers)
                response = self.connection.getresponse()
                return response.status, response.read()
            except (HTTPException, ConnectionError):
                self.connection.close()  # the server closed an idle connection: reopen
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.connection.close()


class Faults:
    """The services' faults, changed only when an example asks for others."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.current: tuple[str, dict[str, Any]] | None = None

    def set(self, fault: tuple[str, dict[str, Any]] | None) -> None:
        if fault == self.current:
            return
        if self.current is not None:
            self.services.set_faults(self.current[0], **CLEAR)
        if fault is not None:
            self.services.set_faults(fault[0], **{**CLEAR, **fault[1]})
        self.current = fault


def canonical(status: int, body: bytes) -> bytes:
    """The body as orjson writes it once parsed (key order kept), with the status; without
    the errors' traceId, which names the request (a new trace each time).

    Where graphql-core's answer depends on timing, not on semantics, the errors are put in
    a canonical form; the data, key order included, and every other error (message,
    locations, path, extensions) are compared byte for byte:

    - Order. graphql-core lists the errors of awaited fields in the order their upstream
      calls happen to answer (with the catalog down, `products` and `category` come back
      either way round from run to run); the plan executor lists them by level. So errors
      are sorted by path.
    - Grouping. A failed upstream call is reported once with the paths of all the fields
      it failed (`extensions.paths`, app/execution/errors.py); which fields share a call
      is batching: a level in the plan executor, whatever ran in one event-loop turn in
      graphql-core. So such an error counts as one error per path (without locations).
    - Errors under a propagated null. When a non-null field fails, graphql-core nulls the
      nearest nullable parent and cancels what is still running under it: whether a sibling
      under it (an awaited call failing too) gets its error in first is a race. So the
      errors strictly under a null of the data are reduced to that null's path: both must
      report at least one error there, not necessarily the same ones.
    """
    parsed = orjson.loads(body)
    errors = parsed.get("errors")
    if errors:
        data = parsed.get("data")
        kept: list[Any] = []
        beneath: set[bytes] = set()
        for error in errors:
            extensions = error.get("extensions") or {}
            extensions.pop("traceId", None)
            paths = extensions.get("paths") or ([error["path"]] if "path" in error else [])
            free = []
            for path in paths:
                nulled = null_above(data, path)
                if nulled is None:
                    free.append(path)
                else:
                    beneath.add(orjson.dumps(nulled))
            if paths and not free:
                continue
            if "paths" not in extensions:
                kept.append(error)
                continue
            # One error per path: which fields share one failed call is batching, and
            # graphql-core's batches depend on when its fields happen to run.
            del extensions["paths"]
            error.pop("locations", None)
            for path in free:
                kept.append({**error, "path": path})
        kept.sort(key=lambda e: (orjson.dumps(e.get("path")), orjson.dumps(e)))
        parsed["errors"] = kept + [{"under null": orjson.loads(p)} for p in sorted(beneath)]
    return b"%d " % status + orjson.dumps(parsed)


def null_above(data: Any, path: list[Any]) -> list[Any] | None:
    """The path of the null strictly above `path` in `data`, if there is one."""
    value = data
    for depth, part in enumerate(path):
        if value is None:
            return path[:depth]
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return None


def check_valid(document: str, variables: dict[str, Any]) -> None:
    """A drawn query is valid and within the gateway's limits: else the generator is wrong."""
    ast = parse(document)
    errors = validate(SCHEMA, ast)
    assert not errors, (document, errors)
    [operation] = [d for d in ast.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {d.name.value: d for d in ast.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    figures = measure(SCHEMA, operation, fragments, variables)
    assert figures is not None, document
    for name, limit in LIMITS.items():
        assert getattr(figures, name) <= limit, (name, document)


def ask_both(clients: tuple[Client, Client], document: str, variables: dict[str, Any] | None,
            user: str | None) -> tuple[bytes, bytes]:
    payload: dict[str, Any] = {"query": document}
    if variables:
        payload["variables"] = variables
    plan, core = (canonical(*client.post(payload, user)) for client in clients)
    return plan, core


def normalized(body: dict[str, Any]) -> dict[str, Any]:
    errors = sorted(
        (e["message"], tuple(e.get("path") or ()), (e.get("extensions") or {}).get("code"))
        for e in body.get("errors", [])
    )
    return {"data": body.get("data"), "errors": errors}


def planned(gateway: Gateway) -> float:
    _, _, metrics = http("GET", gateway.url + "/metrics")
    line = next(line for line in metrics.splitlines()
                if line.startswith("gateway_planned_operations_total"))
    return float(line.split()[-1])


@pytest.mark.parametrize(("document", "variables", "fault", "user"), REGRESSIONS)
def test_fixed_divergences_stay_fixed(
    pair: tuple[Gateway, Gateway], services: Services, document: str,
    variables: dict[str, Any] | None, fault: tuple[str, dict[str, Any]] | None,
    user: str | None,
) -> None:
    check_valid(document, variables or {})
    clients = (Client(pair[0].url), Client(pair[1].url))
    faults = Faults(services)
    before = planned(pair[0])
    try:
        faults.set(fault)
        plan, core = ask_both(clients, document, variables, user)
    finally:
        faults.set(None)
        for client in clients:
            client.close()
    assert plan == core, document
    assert planned(pair[0]) == before + 1  # the plan executor ran it, not graphql-core


def test_both_executors_answer_generated_queries_alike(
    pair: tuple[Gateway, Gateway], services: Services,
) -> None:
    plan_gateway, core_gateway = pair
    clients = (Client(plan_gateway.url), Client(core_gateway.url))
    faults = Faults(services)
    planned_before, core_before = planned(plan_gateway), planned(core_gateway)
    sent = 0

    @settings(max_examples=FUZZ_EXAMPLES or 500, deadline=None, derandomize=not FUZZ_EXAMPLES,
              database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(query=queries(SCHEMA), fault=st.sampled_from(FAULTS),
           user=st.sampled_from([None, None, "u1", "u7"]))
    def check(query: tuple[str, dict[str, Any]], fault: tuple[str, dict[str, Any]] | None,
              user: str | None) -> None:
        nonlocal sent
        document, variables = query
        check_valid(document, variables)
        faults.set(fault)
        plan, core = ask_both(clients, document, variables, user)
        sent += 1
        assert plan == core, (document, variables, fault, user)
        # Again: the plan executor now runs the operation's kept plan (the first request
        # kept it), and must answer the same.
        payload: dict[str, Any] = {"query": document}
        if variables:
            payload["variables"] = variables
        again = canonical(*clients[0].post(payload, user))
        assert again == core, ("kept plan", document, variables, fault, user)

    try:
        check()
    finally:
        faults.set(None)
        for client in clients:
            client.close()
    # Each gateway ran its own executor, and most queries were planned (the rest hold a
    # field the plan executor leaves to graphql-core, such as User.email).
    ran = planned(plan_gateway) - planned_before
    print(f"{ran:.0f} of {2 * sent} requests of generated queries planned")
    assert ran >= 0.8 * 2 * sent  # (each query asked twice of the plan gateway)
    assert planned(core_gateway) == core_before


async def test_both_executors_refuse_an_off_contract_value_alike(
    pair: tuple[Gateway, Gateway], clean_services: Services,
    http_session: aiohttp.ClientSession,
) -> None:
    """A value its scalar cannot represent (a price past Int's 32 bits) is an error at its
    path in both, not written through by the plan executor's verbatim leaves."""
    catalog = clean_services.url("catalog")
    _, _, listed = http("GET", f"{catalog}/products?ids=p77")
    [before] = listed["items"]
    assert isinstance(before["price_cents"], int)
    http("PATCH", f"{catalog}/products/p77", {"price_cents": 3_000_000_000})
    try:
        document = '{ product(id: "p77") { id name price { amount currency } } }'
        answers = []
        for gateway in pair:
            async with http_session.post(gateway.url + "/graphql",
                                         json={"query": document}) as r:
                answers.append(normalized(await r.json()))
        assert answers[0] == answers[1]
        assert answers[0]["data"] == {"product": None}  # (price is non-null, so is amount)
        [(message, path, _)] = answers[0]["errors"]
        assert path == ("product", "price", "amount") and "32-bit" in message
    finally:
        http("PATCH", f"{catalog}/products/p77", {"price_cents": before["price_cents"]})
