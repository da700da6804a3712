"""Mutations through the plan answer exactly as through graphql-core's executor.

A mutation's root fields run one after the other through their own resolvers in both; the
plan executor then completes each payload as it completes a query (app/execution/executor.py,
`PlanExecutor._payload`). Writes change the services, so each gateway has services of its own,
started from the same seed: the same mutations, sent to both in the same order, write the
same ids, and every later answer (of a mutation or a query) must be the same bytes, as in
tests/gateway/test_executor.py (`canonical`), once the times the services stamp writes with
are taken out (`timeless`: the two processes write at different instants).
"""

from __future__ import annotations

import base64
import itertools
import os
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.querygen import mutations
from tests.gateway.test_executor import (
    CLEAR,
    FAULTS,
    SCHEMA,
    Client,
    canonical,
    check_valid,
    normalized,
    planned,
)
from tests.harness import Gateway, Services, start_gateway, start_services

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or 0)
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
PAYLOAD = "errors { code field message }"
REVIEW = ("review { id rating body createdAt author { id name } product { id name "
          "averageRating reviewCount reviews(first: 3) { id rating body author { name } } } }")
ORDER = ("order { id status createdAt total { amount currency } items { quantity "
         "unitPrice { amount } product { id name price { amount } inStock "
         "inventory { sku quantity inStock } reviews(first: 2) { id author { name } } } } "
         "customer { id name email reviews { id } "
         "orders(first: 2) { edges { cursor node { id status } } } } }")
ADD = "mutation($input: AddReviewInput!) { addReview(input: $input) { %s %s } }"
PLACE = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { %s %s } }"


def review(product: str, rating: int = 4, body: str = "Fine.") -> dict[str, Any]:
    return {"input": {"productId": product, "rating": rating, "body": body}}


def order(product: str, key: str, quantity: int = 1) -> dict[str, Any]:
    return {"input": {"items": [{"productId": product, "quantity": quantity}],
                      "idempotencyKey": key}}


Fault = tuple[str, dict[str, Any]]
UNDER_PAYLOAD: list[tuple[str, Fault, dict[str, Any], str]] = [
    ("wrong types", ("catalog", {"bad_body_rate": 1.0, "bad_body": "wrong_types"}),
     order("p16", "catalog-1"), "u7"),
    ("down", ("catalog", {"error_rate": 1.0, "error_status": 503}),
     order("p16", "catalog-2"), "u7"),
    ("down", ("inventory", {"error_rate": 1.0, "error_status": 503}),
     order("p22", "inventory-1"), "u7"),
    ("truncated", ("reviews", {"bad_body_rate": 1.0, "bad_body": "truncated"}),
     order("p18", "reviews-1"), "u1"),
    ("down", ("users", {"error_rate": 1.0, "error_status": 500}), order("p18", "users-1"),
     "u1"),
]
Step = tuple[str, dict[str, Any] | None, tuple[str, dict[str, Any]] | None, str | None]
# Each case: steps (document, variables, fault, user) sent to both gateways in turn.
CASES: dict[str, list[Step]] = {
    "a review and what it changed": [(ADD % (REVIEW, PAYLOAD), review("p11"), None, "u7")],
    "refused in the payload": [
        (ADD % (REVIEW, PAYLOAD), review("p11", 6, " "), None, "u7"),
        (ADD % (REVIEW, PAYLOAD), review("p-none"), None, "u7"),
        (PLACE % (ORDER, PAYLOAD), order("p12", "refused-1", 100_000), None, "u7"),
    ],
    "no user: the data is null": [(ADD % (REVIEW, PAYLOAD), review("p11"), None, None)],
    # The second mutation of the document reads what the first wrote, and a query after it.
    "the second reads the first": [
        ("mutation($a: AddReviewInput!, $b: AddReviewInput!) { "
         "a: addReview(input: $a) { review { id product { reviewCount averageRating } } } "
         "b: addReview(input: $b) { review { id product { reviewCount averageRating "
         "reviews(first: 2) { id rating } } } errors { code } } }",
         {"a": review("p13", 5)["input"], "b": review("p13", 1, "Worse.")["input"]},
         None, "u1"),
        ('{ product(id: "p13") { reviewCount reviews(first: 3) { id body } } }', None, None,
         None),
    ],
    "two orders of one product: the stock they leave": [
        ("mutation($a: PlaceOrderInput!, $b: PlaceOrderInput!) { "
         f"a: placeOrder(input: $a) {{ {ORDER} {PAYLOAD} }} "
         f"b: placeOrder(input: $b) {{ {ORDER} {PAYLOAD} }} }}",
         {"a": {"items": [{"productId": "p14", "quantity": 1}], "idempotencyKey": "two-a"},
          "b": {"items": [{"productId": "p14", "quantity": 2},
                          {"productId": "p15", "quantity": 1}], "idempotencyKey": "two-b"}},
         None, "u7"),
    ],
    # A failing service under the payload: its fields' errors, nulls and fallbacks. The
    # order is placed first, then placed again with its key under the fault: the orders
    # service answers a replay by itself, and the payload reads the failing service.
    **{f"{fault[0]} failing under the payload ({what})": [
        (PLACE % (ORDER, PAYLOAD), placed, None, user),
        (PLACE % (ORDER, PAYLOAD), placed, fault, user),
    ] for what, fault, placed, user in UNDER_PAYLOAD},
    # The write itself fails: the mutation's error, the data null, the next field not run.
    "the write fails": [
        ("mutation($a: AddReviewInput!, $b: AddReviewInput!) { "
         f"a: addReview(input: $a) {{ {REVIEW} }} b: addReview(input: $b) {{ {REVIEW} }} }}",
         {"a": review("p19")["input"], "b": review("p19")["input"]},
         ("reviews", {"error_rate": 1.0, "error_status": 503}), "u7"),
        ('{ product(id: "p19") { reviewCount } }', None, None, None),
    ],
    # A null in a payload's non-null field (an out-of-range `first`) takes its nullable parent.
    "a null propagated in the payload": [
        ("mutation($input: AddReviewInput!) { addReview(input: $input) { "
         "review { id product { id reviews(first: -1) { id } } author { name } } } }",
         review("p20"), None, "u7"),
    ],
}


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[tuple[Gateway, Services], tuple[Gateway, Services]]]:
    """(plan gateway, its services), (graphql-core gateway, its services): equal data."""
    tmp = tmp_path_factory.mktemp("mutation-executors")
    # As tests/gateway/test_executor.py's pair: the same upstream calls in both.
    env = {"CACHE_ENABLED": "false", "RESPONSE_CACHE": "false", "BREAKER_ENABLED": "false",
           "RETRY_MAX_ATTEMPTS": "1"}
    started: list[Any] = []
    try:
        pairs: list[tuple[Gateway, Services]] = []
        for extra in ({}, {"PLAN_EXECUTOR": "false"}):
            services = start_services(tmp / f"services{len(pairs)}")
            started.append(services)
            gateway = start_gateway(tmp, services, env={**env, **extra})
            started.append(gateway)
            pairs.append((gateway, services))
        yield pairs[0], pairs[1]
    finally:
        for process in reversed(started):
            process.stop()


def timeless(value: Any) -> Any:
    """`value` with the times the services stamped it with replaced (in strings, and in
    the gateway's cursors over the orders service's, which name an order's time)."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items()}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    if not isinstance(value, str):
        return value
    if TIME.search(value):
        return TIME.sub("<time>", value)
    try:  # a gateway cursor: [connection, the upstream's cursor, skip]
        connection, upstream, skip = orjson.loads(base64.urlsafe_b64decode(value.encode()))
        inner = base64.urlsafe_b64decode(upstream + "=" * (-len(upstream) % 4)).decode()
    except Exception:
        return value
    return f"<cursor {connection} {TIME.sub('<time>', inner)} {skip}>"


def both(twins: Any, clients: tuple[Client, Client], step: Step) -> tuple[bytes, bytes]:
    document, variables, fault, user = step
    payload: dict[str, Any] = {"query": document}
    if variables:
        payload["variables"] = variables
    for _, services in twins:
        if fault is not None:
            services.set_faults(fault[0], **{**CLEAR, **fault[1]})
    try:
        answers = [client.post(payload, user) for client in clients]
    finally:
        for _, services in twins:
            if fault is not None:
                services.set_faults(fault[0], **CLEAR)
    plan, core = (timeless(orjson.loads(canonical(status, body).split(b" ", 1)[1]))
                  for status, body in answers)
    if plan.get("data") is None:
        # A mutation's own error nulls the data: `canonical` keeps only that there is one,
        # but the fields run one at a time, so which one, and its code, are not a race.
        errors = [normalized(orjson.loads(body))["errors"] for _, body in answers]
        assert errors[0] == errors[1], errors
    return (b"%d " % answers[0][0] + orjson.dumps(plan),
            b"%d " % answers[1][0] + orjson.dumps(core))


@pytest.mark.parametrize("name", list(CASES))
def test_mutations_answer_alike(twins: Any, name: str) -> None:
    (plan_gateway, _), (core_gateway, _) = twins
    clients = (Client(plan_gateway.url), Client(core_gateway.url))
    try:
        for step in CASES[name]:
            check_valid(step[0], step[1] or {})
            before = planned(plan_gateway)
            plan, core = both(twins, clients, step)
            assert plan == core, step
            mutation = step[0].startswith("mutation")
            if mutation and b'"data":null' not in plan:
                assert planned(plan_gateway) == before + 1  # its payloads were planned
    finally:
        for client in clients:
            client.close()


def test_a_placed_order_cancelled_alike(twins: Any) -> None:
    """An order placed, then cancelled by its id in another request, then read."""
    (plan_gateway, _), (core_gateway, _) = twins
    clients = (Client(plan_gateway.url), Client(core_gateway.url))
    try:
        placed = (PLACE % (ORDER, PAYLOAD), order("p21", "cancel-1", 2), None, "u7")
        plan, core = both(twins, clients, placed)
        assert plan == core
        placed_id = orjson.loads(plan.split(b" ", 1)[1])["data"]["placeOrder"]["order"]["id"]
        cancel = ("mutation($id: ID!) { cancelOrder(id: $id) { order { id status items { "
                  "product { inventory { quantity } } } } errors { code field } } "
                  "again: cancelOrder(id: $id) { order { status } errors { code } } }")
        for step in [(cancel, {"id": placed_id}, None, "u7"),
                     (cancel, {"id": placed_id}, None, "u1"),  # someone else's: NOT_FOUND
                     ('query($id: ID!) { order(id: $id) { id status } }', {"id": placed_id},
                      None, "u7")]:
            plan, core = both(twins, clients, step)
            assert plan == core, step
        assert b'"CANCELLED"' in plan
    finally:
        for client in clients:
            client.close()


def test_generated_mutations_answer_alike(twins: Any) -> None:
    (plan_gateway, _), (core_gateway, _) = twins
    clients = (Client(plan_gateway.url), Client(core_gateway.url))
    tags = itertools.count()
    planned_before = planned(plan_gateway)
    sent = 0

    @settings(max_examples=FUZZ_EXAMPLES or 100, deadline=None,
              derandomize=not FUZZ_EXAMPLES, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data(), user=st.sampled_from([None, "u1", "u7", "u7"]),
           fault=st.sampled_from(FAULTS))
    def check(data: st.DataObject, user: str | None,
              fault: tuple[str, dict[str, Any]] | None) -> None:
        nonlocal sent
        document, variables = data.draw(mutations(SCHEMA, f"gen{next(tags)}"))
        check_valid(document, variables)
        plan, core = both(twins, clients, (document, variables, fault, user))
        sent += 1
        assert plan == core, (document, variables, fault, user)

    try:
        check()
    finally:
        for client in clients:
            client.close()
    ran = planned(plan_gateway) - planned_before
    print(f"{ran:.0f} of {sent} generated mutations planned")
    # Without a user, or with the write's service failing, the first field fails before any
    # payload is completed.
    assert ran >= 0.4 * sent
    assert planned(core_gateway) == 0
