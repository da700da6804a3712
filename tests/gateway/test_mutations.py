"""Mutations: they write through the services, map refusals to payload errors, and the same
request reads its own write."""

from __future__ import annotations

import uuid

from services.seed import Dataset
from tests.conftest import GQL, data_of
from tests.harness import Services, http

PLACE = """mutation($input: PlaceOrderInput!) { placeOrder(input: $input) {
  order { id status total { amount currency } items { quantity unitPrice { amount } product { id inventory { quantity } } }
          customer { id orders(first: 1) { edges { node { id } } } } }
  errors { code message field } } }"""


def key() -> str:
    return f"test-{uuid.uuid4()}"


# Tests that write use products from p4001 and users u1 to u20, so the tests that compare
# reads with the seed data (which keep out of that region) are not disturbed by them.
WRITE_REGION = 4000


def stocked_product(dataset: Dataset, services: Services, at_least: int = 5) -> str:
    # Live stock, not the seed: other tests place orders too.
    for pid, p in dataset.products.items():
        if int(pid[1:]) <= WRITE_REGION:
            continue
        _, _, body = http("POST", services.url("inventory") + "/inventory/query",
                          {"skus": [p["sku"]]})
        if body["items"] and body["items"][0]["quantity"] >= at_least:
            return pid
    raise AssertionError("no product in stock")


def live_quantity(services: Services, sku: str) -> int:
    _, _, body = http("POST", services.url("inventory") + "/inventory/query", {"skus": [sku]})
    return int(body["items"][0]["quantity"])


async def test_place_order_reads_its_own_write(
    gql: GQL, services: Services, dataset: Dataset
) -> None:
    pid = stocked_product(dataset, services)
    product = dataset.products[pid]
    before = live_quantity(services, product["sku"])
    # Load the stock and the order list first, in the same request as the mutation's reads.
    body = await gql(PLACE, {"input": {"items": [{"productId": pid, "quantity": 2}],
                                        "idempotencyKey": key()}}, user="u5")
    payload = data_of(body)["placeOrder"]
    assert payload["errors"] == []
    order = payload["order"]
    assert order["status"] == "PLACED"
    assert order["total"] == {"amount": 2 * product["price_cents"], "currency": "USD"}
    line = order["items"][0]
    assert line["quantity"] == 2 and line["unitPrice"]["amount"] == product["price_cents"]
    assert line["product"]["inventory"]["quantity"] == before - 2
    assert order["customer"]["orders"]["edges"][0]["node"]["id"] == order["id"]
    assert live_quantity(services, product["sku"]) == before - 2


async def test_place_order_is_idempotent_by_key(
    gql: GQL, services: Services, dataset: Dataset
) -> None:
    pid = stocked_product(dataset, services)
    k = key()
    variables = {"input": {"items": [{"productId": pid, "quantity": 1}], "idempotencyKey": k}}
    first = data_of(await gql(PLACE, variables, user="u6"))["placeOrder"]
    again = data_of(await gql(PLACE, variables, user="u6"))["placeOrder"]
    assert again["order"]["id"] == first["order"]["id"]
    other = {"input": {"items": [{"productId": pid, "quantity": 2}], "idempotencyKey": k}}
    conflict = data_of(await gql(PLACE, other, user="u6"))["placeOrder"]
    assert conflict["order"] is None
    assert conflict["errors"][0]["code"] == "IDEMPOTENCY_CONFLICT"
    assert conflict["errors"][0]["field"] == "idempotencyKey"


async def test_insufficient_stock_is_a_payload_error(
    gql: GQL, services: Services, dataset: Dataset
) -> None:
    pid = stocked_product(dataset, services, at_least=1)
    sku = dataset.products[pid]["sku"]
    before = live_quantity(services, sku)
    body = await gql(PLACE, {"input": {"items": [{"productId": pid, "quantity": before + 1}],
                                        "idempotencyKey": key()}}, user="u7")
    payload = data_of(body)["placeOrder"]
    assert payload["order"] is None
    assert payload["errors"][0]["code"] == "INSUFFICIENT_STOCK"
    assert live_quantity(services, sku) == before


async def test_bad_order_input_is_refused_before_any_call(
    gql: GQL, clean_services: Services
) -> None:
    body = await gql(PLACE, {"input": {"items": [{"productId": "p1", "quantity": 0}],
                                        "idempotencyKey": key()}}, user="u7")
    payload = data_of(body)["placeOrder"]
    assert payload["errors"] == [
        {"code": "BAD_USER_INPUT", "message": "Quantity must be at least 1",
         "field": "items.0.quantity"}
    ]
    assert clean_services.stats("orders")["requests"] == {}


async def test_mutations_need_a_user(gql: GQL) -> None:
    body = await gql(PLACE, {"input": {"items": [{"productId": "p1", "quantity": 1}],
                                        "idempotencyKey": key()}})
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


CANCEL = """mutation($id: ID!) { cancelOrder(id: $id) {
  order { id status customer { id } } errors { code field } } }"""


async def test_cancel_order_rules(gql: GQL, services: Services, dataset: Dataset) -> None:
    pid = stocked_product(dataset, services)
    sku = dataset.products[pid]["sku"]
    placed = data_of(await gql(PLACE, {"input": {"items": [{"productId": pid, "quantity": 3}],
                                                  "idempotencyKey": key()}}, user="u8"))
    order_id = placed["placeOrder"]["order"]["id"]
    before = live_quantity(services, sku)

    # Someone else's order answers as if it did not exist.
    denied = data_of(await gql(CANCEL, {"id": order_id}, user="u9"))["cancelOrder"]
    assert denied == {"order": None, "errors": [{"code": "NOT_FOUND", "field": "id"}]}

    done = data_of(await gql(CANCEL, {"id": order_id}, user="u8"))["cancelOrder"]
    assert done["errors"] == [] and done["order"]["status"] == "CANCELLED"
    assert live_quantity(services, sku) == before + 3

    shipped = next(o for o in dataset.orders.values() if o["status"] == "SHIPPED")
    refused = data_of(await gql(CANCEL, {"id": shipped["id"]}, user=shipped["user_id"]))
    assert refused["cancelOrder"]["errors"][0]["code"] == "ALREADY_SHIPPED"
    assert refused["cancelOrder"]["order"] is None


async def test_cancel_of_an_order_the_warehouse_shipped(gql: GQL, services: Services,
                                                         dataset: Dataset) -> None:
    """The warehouse ships through the orders service, never through the gateway: the next
    read shows it, and cancelling answers the ALREADY_SHIPPED refusal, stock untouched."""
    pid = stocked_product(dataset, services)
    sku = dataset.products[pid]["sku"]
    placed = data_of(await gql(PLACE, {"input": {"items": [{"productId": pid, "quantity": 1}],
                                                  "idempotencyKey": key()}}, user="u11"))
    order_id = placed["placeOrder"]["order"]["id"]
    status, _, shipped = http("POST", services.url("orders") + f"/orders/{order_id}/ship")
    assert status == 200 and shipped["status"] == "SHIPPED"
    read = data_of(await gql('query($id: ID!) { order(id: $id) { id status } }',
                             {"id": order_id}, user="u11"))
    assert read["order"] == {"id": order_id, "status": "SHIPPED"}
    before = live_quantity(services, sku)
    refused = data_of(await gql(CANCEL, {"id": order_id}, user="u11"))["cancelOrder"]
    assert refused == {"order": None, "errors": [{"code": "ALREADY_SHIPPED", "field": "id"}]}
    assert live_quantity(services, sku) == before


ADD = """mutation($input: AddReviewInput!) { addReview(input: $input) {
  review { id rating body author { id } product { id reviewCount averageRating reviews(first: 1) { id } } }
  errors { code field } } }"""


async def test_add_review_reads_its_own_write(gql: GQL, dataset: Dataset) -> None:
    pid = "p4011"
    before = data_of(await gql('{ product(id: "p4011") { reviewCount } }'))["product"]["reviewCount"]
    body = await gql(ADD, {"input": {"productId": pid, "rating": 4, "body": "Solid."}},
                     user="u10")
    payload = data_of(body)["addReview"]
    assert payload["errors"] == []
    review = payload["review"]
    assert review["author"] == {"id": "u10"} and review["rating"] == 4
    assert review["product"]["reviewCount"] == before + 1
    assert review["product"]["reviews"][0]["id"] == review["id"]


async def test_add_review_rating_out_of_range(gql: GQL, clean_services: Services) -> None:
    body = await gql(ADD, {"input": {"productId": "p1", "rating": 6, "body": "x"}}, user="u1")
    payload = data_of(body)["addReview"]
    assert payload == {"review": None, "errors": [{"code": "INVALID_RATING", "field": "rating"}]}
    assert clean_services.stats("reviews")["requests"] == {}


async def test_add_review_of_unknown_product(gql: GQL, clean_services: Services) -> None:
    body = await gql(ADD, {"input": {"productId": "p-none", "rating": 3, "body": "x"}}, user="u1")
    payload = data_of(body)["addReview"]
    assert payload == {"review": None, "errors": [{"code": "NOT_FOUND", "field": "productId"}]}
    assert clean_services.stats("reviews")["requests"] == {}


async def test_service_auth_failures_are_not_payload_errors(
    gql: GQL, clean_services: Services
) -> None:
    # A 401 from the orders service is the gateway's problem, not the caller's input: an
    # answer the gateway cannot use.
    clean_services.set_faults("orders", error_rate=1.0, error_status=401)
    body = await gql(PLACE, {"input": {"items": [{"productId": "p1", "quantity": 1}],
                                        "idempotencyKey": key()}}, user="u1")
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_BAD_RESPONSE"
    assert body["errors"][0]["extensions"]["service"] == "orders"


async def test_one_request_reads_its_own_writes(
    gql: GQL, services: Services, dataset: Dataset
) -> None:
    # Two writes in one document: the second reads the first's stock, order list and
    # rating through the request's loaders, which the first must have updated.
    pid = stocked_product(dataset, services, at_least=5)
    before = live_quantity(services, dataset.products[pid]["sku"])
    doc = """mutation($a: PlaceOrderInput!, $b: PlaceOrderInput!) {
      a: placeOrder(input: $a) { order { id items { product { inventory { quantity } } }
                                         customer { orders(first: 5) { edges { node { id } } } } } }
      b: placeOrder(input: $b) { order { id items { product { inventory { quantity } } }
                                         customer { orders(first: 5) { edges { node { id } } } } } }
    }"""
    line = [{"productId": pid, "quantity": 1}]
    data = data_of(await gql(doc, {"a": {"items": line, "idempotencyKey": key()},
                                   "b": {"items": line, "idempotencyKey": key()}}, user="u12"))
    a, b = data["a"]["order"], data["b"]["order"]
    assert a["items"][0]["product"]["inventory"]["quantity"] == before - 1
    assert b["items"][0]["product"]["inventory"]["quantity"] == before - 2
    assert [e["node"]["id"] for e in b["customer"]["orders"]["edges"][:2]] == [b["id"], a["id"]]

    doc = """mutation($id: ID!) {
      c: cancelOrder(id: $id) { order { status items { product { inventory { quantity } } } } }
    }"""
    data = data_of(await gql(doc, {"id": b["id"]}, user="u12"))
    assert data["c"]["order"]["status"] == "CANCELLED"
    assert data["c"]["order"]["items"][0]["product"]["inventory"]["quantity"] == before - 1

    doc = """mutation($a: AddReviewInput!) {
      a: addReview(input: $a) { review { product { reviewCount reviews(first: 1) { id } } } }
      b: addReview(input: $a) { review { id product { reviewCount reviews(first: 1) { id } } } }
    }"""
    count = data_of(await gql('query($p: ID!) { product(id: $p) { reviewCount } }',
                              {"p": pid}))["product"]["reviewCount"]
    data = data_of(await gql(doc, {"a": {"productId": pid, "rating": 5, "body": "Twice."}},
                             user="u12"))
    assert data["a"]["review"]["product"]["reviewCount"] == count + 1
    assert data["b"]["review"]["product"]["reviewCount"] == count + 2
    assert data["b"]["review"]["product"]["reviews"][0]["id"] == data["b"]["review"]["id"]
