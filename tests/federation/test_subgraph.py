"""The gateway as an Apollo Federation v2 subgraph, asked as a router asks it: `_service { sdl }`
and `_entities(representations:)` over HTTP (issue 21, point 6). Composition with Apollo
Gateway itself: test_supergraph.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from graphql import (
    ObjectTypeDefinitionNode,
    SchemaExtensionNode,
    build_ast_schema,
    build_schema,
    parse,
    print_schema,
    value_from_ast_untyped,
)

from schema import SDL_FILE
from tests.harness import Gateway, Services, http, token

ENTITY_TYPES = {"User", "Product", "Category", "Order", "Review"}
ENTITIES = """query Entities($representations: [_Any!]!) {
  _entities(representations: $representations) {
    __typename
    ... on User { id username }
    ... on Product { id name price { amount currency } }
    ... on Category { id name }
    ... on Review { id rating }
    ... on Order { id status total { amount } }
  }
}"""


def ask(gateway: Gateway, query: str, variables: dict[str, Any] | None = None,
        user: str | None = None, scope: str = "") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token(user, scope)}"} if user else {}
    status, _, body = http("POST", gateway.url + "/graphql",
                           {"query": query, "variables": variables or {}}, headers)
    assert status in (200, 400), body
    return dict(body)


def items(services: Services, name: str, path: str) -> list[dict[str, Any]]:
    status, _, body = http("GET", services.url(name) + path)
    assert status == 200, body
    return list(body["items"])


def reps(typename: str, ids: list[str]) -> list[dict[str, str]]:
    return [{"__typename": typename, "id": i} for i in ids]


@pytest.fixture(scope="module")
def graphql_core_subgraph(start: Callable[..., Gateway]) -> Gateway:
    """The gateway as a subgraph with graphql-core's executor for everything."""
    return start(PLAN_EXECUTOR="false")


@pytest.fixture(params=["plan executor", "graphql-core executor"])
def either(request: pytest.FixtureRequest, subgraph: Gateway) -> Gateway:
    if request.param == "plan executor":
        return subgraph
    return request.getfixturevalue("graphql_core_subgraph")


def test_service_sdl_is_the_served_schema_with_the_link_and_the_keys(subgraph: Gateway) -> None:
    sdl = ask(subgraph, "{ _service { sdl } }")["data"]["_service"]["sdl"]
    document = parse(sdl)
    [link] = [d for d in document.definitions if isinstance(d, SchemaExtensionNode)]
    [directive] = link.directives or ()
    assert directive.name.value == "link"
    arguments = {a.name.value: value_from_ast_untyped(a.value)
                 for a in directive.arguments or ()}
    assert arguments["url"].startswith("https://specs.apollo.dev/federation/v2.")
    assert "@key" in arguments["import"]
    keys = {}
    for node in document.definitions:
        if isinstance(node, ObjectTypeDefinitionNode):
            for directive in node.directives or ():
                if directive.name.value == "key":
                    [fields] = directive.arguments or ()
                    keys[node.name.value] = value_from_ast_untyped(fields.value)
    assert keys == dict.fromkeys(ENTITY_TYPES, "id")
    # Otherwise it is the served schema, the checked-in one, without the federation fields.
    for name in ("_entities", "_service", "_Any", "_Entity", "_Service"):
        assert name not in sdl
    served = build_ast_schema(document, assume_valid_sdl=True)
    assert print_schema(served) == print_schema(build_schema(SDL_FILE.read_text()))


def test_without_the_setting_there_is_no_federation(start: Callable[..., Gateway]) -> None:
    plain = start(FEDERATION_SUBGRAPH=None)
    for query in ("{ _service { sdl } }",
                  '{ _entities(representations: [{__typename: "Product", id: "p1"}]) '
                  "{ __typename } }"):
        body = ask(plain, query)
        assert body.get("data") is None
        assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED", body
    assert "_entities" not in ask(plain, "{ __schema { queryType { fields { name } } } }")[
        "data"]["__schema"]["queryType"]["fields"]


def test_n_representations_of_each_type_cost_one_batched_call_per_type(
        either: Gateway, fservices: Services) -> None:
    products = [f"p{i}" for i in (11, 12, 13, 14, 15)]
    users = ["u11", "u12", "u13", "u14"]
    categories = ["c1", "c2", "c3"]
    reviews = [r["id"] for r in items(fservices, "reviews", "/reviews?product_ids=p11")][:3]
    orders = [o["id"] for o in items(fservices, "orders", "/orders?user_id=u11&first=2")]
    assert len(reviews) >= 2 and orders
    # Interleaved, as a router sends them when a plan meets several types at once.
    representations = [*reps("Product", products[:2]), *reps("User", users),
                       *reps("Category", categories), *reps("Product", products[2:]),
                       *reps("Review", reviews), *reps("Order", orders)]
    by_id = {p["id"]: p for p in items(fservices, "catalog", f"/products?ids={','.join(products)}")}
    fservices.reset_stats()
    body = ask(either, ENTITIES, {"representations": representations}, user="u11",
               scope="read:orders")
    assert "errors" not in body, body
    answered = body["data"]["_entities"]
    # One entry per representation, in order, each the entity it names.
    assert [(e["__typename"], e["id"]) for e in answered] == [
        (r["__typename"], r["id"]) for r in representations]
    for entity in answered:
        if entity["__typename"] == "Product":
            product = by_id[entity["id"]]
            assert entity["name"] == product["name"]
            assert entity["price"] == {"amount": product["price_cents"],
                                       "currency": product["currency"]}
    calls = {name: fservices.stats(name)["requests"]
             for name in ("users", "catalog", "reviews", "orders")}
    assert calls == {
        "users": {"GET /users": 1},
        "catalog": {"GET /products": 1, "GET /categories": 1},
        "reviews": {"GET /reviews": 1},
        "orders": {"GET /orders": 1},
    }


def test_an_entity_that_does_not_exist_is_null(either: Gateway) -> None:
    body = ask(either, ENTITIES, {"representations": reps("Product", ["p1", "p999999", "p2"])})
    assert "errors" not in body, body
    assert [e and e["id"] for e in body["data"]["_entities"]] == ["p1", None, "p2"]


def test_a_bad_representation_is_an_error_at_its_own_index(either: Gateway) -> None:
    representations: list[Any] = [
        {"__typename": "Product", "id": "p1"},
        {"__typename": "Stock", "id": "SKU-00001"},  # not an entity of this subgraph
        {"__typename": "User"},  # no key
        {"__typename": "User", "id": "u" + "1" * 300},  # over MAX_ID_LENGTH
        {"__typename": "User", "id": "u1"},
    ]
    body = ask(either, ENTITIES, {"representations": representations})
    answered = body["data"]["_entities"]
    assert answered[0]["id"] == "p1" and answered[4]["id"] == "u1"
    assert answered[1:4] == [None, None, None]
    errors = {tuple(e["path"]): e["extensions"]["code"] for e in body["errors"]}
    assert errors == {("_entities", 1): "BAD_USER_INPUT", ("_entities", 2): "BAD_USER_INPUT",
                      ("_entities", 3): "BAD_USER_INPUT"}


def test_representations_given_in_the_document_work_too(subgraph: Gateway) -> None:
    body = ask(subgraph, '{ _entities(representations: [{__typename: "Category", id: "c2"}]) '
                         "{ ... on Category { id name } } }")
    assert body["data"]["_entities"][0]["id"] == "c2" and body["data"]["_entities"][0]["name"]


def test_an_order_needs_read_orders_and_is_the_caller_s_own(
        either: Gateway, fservices: Services) -> None:
    [own] = items(fservices, "orders", "/orders?user_id=u21&first=1")
    [other] = items(fservices, "orders", "/orders?user_id=u22&first=1")
    variables = {"representations": reps("Order", [own["id"], other["id"]])}
    query = "query($representations: [_Any!]!) { _entities(representations: $representations) " \
            "{ ... on Order { id customer { id } } } }"

    def codes(body: dict[str, Any]) -> dict[tuple[Any, ...], str]:
        return {tuple(e["path"]): e["extensions"]["code"] for e in body.get("errors", ())}

    anonymous = ask(either, query, variables)
    assert anonymous["data"]["_entities"] == [None, None]
    assert codes(anonymous) == {("_entities", 0): "UNAUTHENTICATED",
                                ("_entities", 1): "UNAUTHENTICATED"}
    no_scope = ask(either, query, variables, user="u21")
    assert no_scope["data"]["_entities"] == [None, None]
    assert set(codes(no_scope).values()) == {"FORBIDDEN"}
    owner = ask(either, query, variables, user="u21", scope="read:orders")
    assert "errors" not in owner, owner
    # Someone else's order reads as if it did not exist, as with `order(id:)`.
    assert owner["data"]["_entities"] == [{"id": own["id"], "customer": {"id": "u21"}}, None]
    admin = ask(either, query, variables, user="u1", scope="admin")
    assert [e["id"] for e in admin["data"]["_entities"]] == [own["id"], other["id"]]


def test_a_user_s_private_fields_keep_their_permission(either: Gateway) -> None:
    query = "query($representations: [_Any!]!) { _entities(representations: $representations) " \
            "{ ... on User { id email } } }"
    body = ask(either, query, {"representations": reps("User", ["u31", "u32"])}, user="u31")
    mine, theirs = body["data"]["_entities"]
    assert mine["id"] == "u31" and mine["email"]
    assert theirs == {"id": "u32", "email": None}
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
        (["_entities", 1, "email"], "FORBIDDEN")]


def test_the_number_of_representations_multiplies_the_query_cost(
        start: Callable[..., Gateway]) -> None:
    # By the IBM cost directives: a product costs 1 (its scalars 0), times the number of
    # representations.
    limited = start(MAX_QUERY_COST="50")
    query = "query($representations: [_Any!]!) { _entities(representations: $representations) " \
            "{ ... on Product { id name } } }"
    assert "errors" not in ask(limited, query, {"representations": reps("Product", ["p1"] * 50)})
    body = ask(limited, query, {"representations": reps("Product", ["p1"] * 51)})
    assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX", body
    assert body["errors"][0]["extensions"]["measure"] == "cost"
    assert body["errors"][0]["extensions"]["actual"] == 51


def test_the_federation_fields_and_types_are_described() -> None:
    from app.config.settings import Settings
    from schema import build_schema as build_gateway_schema
    from tests.gateway.test_schema_docs import undocumented

    assert undocumented(build_gateway_schema(
        settings=Settings(federation_subgraph=True))._schema) == []


def test_with_the_entity_cache_entities_read_again_cost_no_call(
        start: Callable[..., Gateway], fservices: Services) -> None:
    cached = start(CACHE_ENABLED=None)  # the default: on
    variables = {"representations": reps("Product", ["p61", "p62", "p63"])}
    fservices.reset_stats()
    first = ask(cached, ENTITIES, variables)
    second = ask(cached, ENTITIES, variables)
    assert first == second and "errors" not in first
    assert fservices.stats("catalog")["requests"] == {"GET /products": 1}
    # A router's entity fetch is never stored by a shared cache: no hint covers `_entities`.
    status, headers, _ = http("POST", cached.url + "/graphql",
                              {"query": ENTITIES, "variables": variables})
    assert status == 200 and headers["cache-control"] == "no-store"
