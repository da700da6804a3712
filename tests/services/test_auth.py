"""The reference authorization server on its own (services/auth.py): its tokens verify with
an independent JWT library against its JWKS, in either algorithm, and its keys rotate with
an overlap. The flows through the gateway are in tests/security/test_oauth.py."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator

import jwt
import pytest

from services.auth import AuthSettings, metadata
from tests.harness import Services, free_port, http, running_services

ACME = "acme-shop:acme-shop-secret-0123456789abcdef012345"


@pytest.fixture(scope="module")
def es256(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    port = free_port()
    with running_services(tmp_path_factory.mktemp("auth"), ports={"auth": port}, auth=True,
                          env={"AUTH_SIGNING_ALG": "ES256", "AUTH_ACCESS_TOKEN_TTL_S": "60",
                               "AUTH_KEY_OVERLAP_S": "3600"}) as svc:
        yield svc


def client_token(services: Services, scope: str = "read:catalog") -> str:
    basic = base64.b64encode(ACME.encode()).decode()
    request = urllib.request.Request(
        services.url("auth") + "/oauth/token", method="POST",
        data=f"grant_type=client_credentials&scope={scope}".encode(),
        headers={"Authorization": f"Basic {basic}",
                 "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
        assert response.headers["Cache-Control"] == "no-store"
    assert body["expires_in"] == 60
    return str(body["access_token"])


def test_its_tokens_verify_against_its_jwks_with_another_library(es256: Services) -> None:
    issuer = es256.url("auth")
    _, _, config = http("GET", issuer + "/.well-known/openid-configuration")
    keys = jwt.PyJWKClient(config["jwks_uri"])
    issued = client_token(es256)
    key = keys.get_signing_key_from_jwt(issued)
    claims = jwt.decode(issued, key.key, algorithms=["ES256"], audience="urn:federation-gateway",
                        issuer=issuer)
    assert claims["sub"] == "acme-shop" and claims["tier"] == "standard"
    assert claims["exp"] - claims["iat"] == 60 and len(claims["jti"]) == 32
    assert jwt.get_unverified_header(issued)["typ"] == "at+jwt"


def test_a_rotation_publishes_both_keys_until_the_overlap_ends(es256: Services) -> None:
    issuer = es256.url("auth")
    before = client_token(es256)
    status, _, rotated = http("POST", issuer + "/_keys/rotate")
    assert status == 200 and len(rotated["published"]) == 2
    after = client_token(es256)
    old_kid, new_kid = (jwt.get_unverified_header(t)["kid"] for t in (before, after))
    assert old_kid != new_kid == rotated["signing"]
    _, _, jwks = http("GET", issuer + "/jwks.json")
    assert [k["kid"] for k in jwks["keys"]] == [old_kid, new_kid]
    # Both verify while they overlap.
    client = jwt.PyJWKClient(issuer + "/jwks.json", cache_keys=False, cache_jwk_set=False)
    for issued in (before, after):
        jwt.decode(issued, client.get_signing_key_from_jwt(issued).key, algorithms=["ES256"],
                   audience="urn:federation-gateway")
    http("POST", issuer + "/_keys/retire")  # the overlap is over
    _, _, jwks = http("GET", issuer + "/jwks.json")
    assert [k["kid"] for k in jwks["keys"]] == [new_kid]


def test_a_key_published_ahead_signs_only_once_activated(es256: Services) -> None:
    issuer = es256.url("auth")
    signing = jwt.get_unverified_header(client_token(es256))["kid"]
    status, _, rotated = http("POST", issuer + "/_keys/rotate", {"publish_ahead_s": 3600})
    assert status == 200 and rotated["signing"] == signing and rotated["next"] != signing
    _, _, jwks = http("GET", issuer + "/jwks.json")
    assert [k["kid"] for k in jwks["keys"]] == rotated["published"]
    assert rotated["next"] in rotated["published"]  # published before it signs anything
    assert jwt.get_unverified_header(client_token(es256))["kid"] == signing
    _, _, activated = http("POST", issuer + "/_keys/activate")
    assert activated["signing"] == rotated["next"] and activated["next"] is None
    assert jwt.get_unverified_header(client_token(es256))["kid"] == rotated["next"]
    assert signing in activated["published"]  # the overlap


def test_an_http_issuer_off_loopback_is_allowed_for_development() -> None:
    """docker compose names it http://services:8007: OpenID Connect wants https, but the
    reference server must still start (it is a development stand-in)."""
    settings = AuthSettings.from_env("http://services:8007", {})
    described = metadata(settings)
    assert described["issuer"] == "http://services:8007"
    assert described["token_endpoint"] == "http://services:8007/oauth/token"
    for bad in ({"AUTH_SIGNING_ALG": "HS256"},
                {"AUTH_ACCESS_TOKEN_TTL_S": "900", "AUTH_KEY_OVERLAP_S": "600"},
                {"AUTH_KEY_ROTATION_S": "600", "AUTH_KEY_PUBLISH_AHEAD_S": "600"}):
        with pytest.raises(ValueError):
            AuthSettings.from_env("http://127.0.0.1:8007", bad)


def test_the_token_endpoint_answers_in_oauths_error_format(es256: Services) -> None:
    token_url = es256.url("auth") + "/oauth/token"
    status, headers, body = http("POST", token_url, {"grant_type": "client_credentials"})
    assert status == 400 and body["error"] == "invalid_request"  # JSON: not a form
    assert {k.lower(): v for k, v in headers.items()}["cache-control"] == "no-store"
    status, _, body = http("POST", token_url, None, headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and body["error"] == "unsupported_grant_type"
