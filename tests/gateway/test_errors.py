"""Every error a client sees carries an `extensions.code`, and never a stack trace."""

from __future__ import annotations

from tests.conftest import GQL
from tests.harness import Services


async def test_parse_error(gql: GQL) -> None:
    body = await gql("{ topProducts( }")
    assert [e["extensions"]["code"] for e in body["errors"]] == ["GRAPHQL_PARSE_FAILED"]


async def test_unknown_field(gql: GQL) -> None:
    body = await gql("{ nope }")
    assert [e["extensions"]["code"] for e in body["errors"]] == ["GRAPHQL_VALIDATION_FAILED"]


async def test_variable_of_the_wrong_type(gql: GQL) -> None:
    body = await gql("query($i: ID!) { product(id: $i) { id } }", {"i": 5.5})
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
    body = await gql("query($i: ID!) { product(id: $i) { id } }", {})
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]


async def test_failing_service_nulls_only_what_depends_on_it(
    gql: GQL, clean_services: Services
) -> None:
    clean_services.set_faults("reviews", error_rate=1.0, error_status=503)
    body = await gql('{ product(id: "p1") { id name } user(id: "u1") { id reviews { id } } }')
    # User.reviews is non-null: rather than null the user (and lose what the users service
    # answered), the list is empty and the error says why, at its path.
    assert body["data"] == {"product": {"id": "p1", "name": body["data"]["product"]["name"]},
                            "user": {"id": "u1", "reviews": []}}
    errors = body["errors"]
    assert [e["path"] for e in errors] == [["user", "reviews"]]
    assert errors[0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert errors[0]["extensions"]["service"] == "reviews"
    assert "Traceback" not in errors[0]["message"] and "127.0.0.1" not in errors[0]["message"]
