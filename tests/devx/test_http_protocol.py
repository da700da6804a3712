"""GraphQL over HTTP: the graphql-http package's audit passes with no error and no warning,
and the status codes and media types its clients rely on."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
from http.client import HTTPConnection
from typing import Any

import pytest

from tests.devx.conftest import NODE_MODULES, ask
from tests.harness import ROOT, Gateway, http, require

AUDIT = ROOT / "tests" / "devx" / "audit.mjs"
NEW = "application/graphql-response+json"


def test_the_graphql_http_audit_passes_without_errors_or_warnings(gateway: Gateway) -> None:
    node = shutil.which("node")
    require(node is not None, "Node.js")
    require((NODE_MODULES / "graphql-http").is_dir(), "npm's graphql-http (make assets)")
    assert node is not None
    run = subprocess.run([node, str(AUDIT), gateway.url + "/graphql"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    audits = [json.loads(line) for line in run.stdout.splitlines()]
    failed = [f"{a['status']} {a['id']}: {a['name']}: {a['reason']}"
              for a in audits if a["status"] != "ok"]
    assert len(audits) >= 50 and not failed, "\n".join(failed)


def post(gateway: Gateway, query: str, accept: str | None,
         variables: dict[str, object] | None = None) -> tuple[int, str, dict[str, Any]]:
    """The status, the answer's media type and the body, asking with `accept`."""
    status, headers, body = ask(gateway, query, variables, {"Accept": accept} if accept else None)
    return status, headers["content-type"], body


@pytest.mark.parametrize(("query", "variables"), [
    ("{ product(id: ", None),                        # does not parse
    ("{ nope }", None),                              # does not validate
    ("query ($id: ID!) { product(id: $id) { id } }", {"id": {"not": "an id"}}),  # variables
    ("query A { __typename } query B { __typename }", None),  # which one? (no operationName)
])
def test_a_request_that_never_ran_is_400_in_the_new_media_type_and_200_in_json(
        gateway: Gateway, query: str, variables: dict[str, object] | None) -> None:
    status, media, body = post(gateway, query, NEW, variables)
    assert (status, media) == (400, NEW)
    assert "data" not in body and body["errors"]
    # Clients older than the specification ask for plain JSON (or nothing): always 200.
    for accept in ("application/json", None):
        status, media, body = post(gateway, query, accept, variables)
        assert (status, media) == (200, "application/json")
        assert body["data"] is None and body["errors"]


def test_a_field_error_is_200_with_the_data_that_resolved(gateway: Gateway) -> None:
    # An anonymous caller may not read a user's email: a field error, the rest stands.
    status, media, body = post(gateway, '{ user(id: "u1") { id email } }', NEW)
    assert (status, media) == (200, NEW)
    assert body["data"] == {"user": {"id": "u1", "email": None}}
    assert body["errors"][0]["path"] == ["user", "email"]


def test_the_client_s_preference_picks_the_media_type(gateway: Gateway) -> None:
    for accept, expected in [
        (f"{NEW}, application/json;q=0.9", NEW),
        (f"application/json, {NEW};q=0.5", "application/json"),
        ("*/*", "application/json"),
        (f"{NEW};q=0", "application/json"),
    ]:
        assert post(gateway, "{ __typename }", accept)[:2] == (200, expected), accept
    # The answer depends on Accept: caches must keep one per Accept.
    product = urllib.parse.quote('{ product(id: "p2") { id name } }')
    status, headers, _ = http("GET", f"{gateway.url}/graphql?query={product}")
    assert status == 200 and headers["vary"] == "Accept"
    assert "public" in headers["cache-control"]
    # Several Accept headers are one list (RFC 9110): the second names the new type.
    connection = HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    connection.putrequest("POST", "/graphql")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Accept", "text/plain;q=0.1")
    connection.putheader("Accept", NEW)
    body = b'{"query": "{ __typename }"}'
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    answer = connection.getresponse()
    assert answer.status == 200 and answer.getheader("Content-Type") == NEW
    connection.close()


def test_get_runs_queries_and_never_mutations(gateway: Gateway) -> None:
    query = urllib.parse.quote('{ product(id: "p1") { id } }')
    status, _, body = http("GET", f"{gateway.url}/graphql?query={query}",
                           headers={"Accept": NEW})
    assert status == 200 and body == {"data": {"product": {"id": "p1"}}}
    mutation = urllib.parse.quote(
        'mutation { addReview(input: {productId: "p1", rating: 5, body: "x"}) { id } }')
    for accept in (NEW, "application/json"):
        status, headers, body = http("GET", f"{gateway.url}/graphql?query={mutation}",
                                     headers={"Accept": accept, "X-User-Id": "u1"})
        assert status == 405 and headers["allow"] == "POST", accept
        assert body["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
