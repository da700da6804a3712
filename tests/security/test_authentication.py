"""Bearer tokens: HS256 with a secret, RS256/ES256 through a JWKS URL served by a local key
server; a bad token is a 401, never a silent anonymous."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.harness import JWT_SECRET, ROOT, Gateway, free_port, local_server, token
from tests.security.conftest import call

ME = "{ me { id } }"


async def test_no_token_is_anonymous_and_reads_the_public_catalog(
    prod: Gateway, http_session: aiohttp.ClientSession
) -> None:
    answer = await call(http_session, prod, '{ me { id } product(id: "p1") { id reviews(first: 1) { author { id name } } } }')
    assert answer.status == 200 and "errors" not in answer.body
    assert answer.body["data"]["me"] is None and answer.body["data"]["product"]["id"] == "p1"
    # The development header means nothing in production mode.
    answer = await call(http_session, prod, ME, headers={"X-User-Id": "u1"})
    assert answer.body["data"]["me"] is None


async def test_a_valid_token_names_the_caller(
    prod: Gateway, http_session: aiohttp.ClientSession
) -> None:
    answer = await call(http_session, prod, ME, token=token("u7", "read:catalog"))
    assert answer.status == 200 and answer.body["data"]["me"] == {"id": "u7"}


@pytest.mark.parametrize(("label", "bad"), [
    ("expired", lambda: token("u1", exp=int(time.time()) - 3600)),
    ("not yet valid", lambda: token("u1", nbf=int(time.time()) + 3600)),
    ("wrong signature", lambda: jwt.encode({"sub": "u1", "exp": int(time.time()) + 60},
                                           "another-secret-0123456789abcdef-012345",
                                           algorithm="HS256")),
    ("no expiry", lambda: jwt.encode({"sub": "u1"}, JWT_SECRET, algorithm="HS256")),
    ("no subject", lambda: jwt.encode({"exp": int(time.time()) + 60}, JWT_SECRET,
                                      algorithm="HS256")),
    ("not a JWT", lambda: "not-a-token"),
    ("alg none", lambda: jwt.encode({"sub": "admin", "scope": "admin",
                                     "exp": int(time.time()) + 60}, "", algorithm="none")),
])
async def test_a_bad_token_is_refused_with_401(
    prod: Gateway, http_session: aiohttp.ClientSession, label: str, bad: Callable[[], str]
) -> None:
    answer = await call(http_session, prod, ME, token=bad())
    assert answer.status == 401, label
    assert answer.codes() == ["UNAUTHENTICATED"] and "data" not in answer.body
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_malformed_authorization_header_is_refused(
    prod: Gateway, http_session: aiohttp.ClientSession
) -> None:
    for value in ("Basic dTE6cHc=", "Bearer", "Bearer   "):
        answer = await call(http_session, prod, ME, headers={"Authorization": value})
        assert answer.status == 401 and answer.codes() == ["UNAUTHENTICATED"], value


async def test_a_small_leeway_forgives_clock_skew(
    prod: Gateway, http_session: aiohttp.ClientSession
) -> None:
    just_expired = token("u1", exp=int(time.time()) - 5)  # the leeway is 30 s
    answer = await call(http_session, prod, ME, token=just_expired)
    assert answer.status == 200 and answer.body["data"]["me"] == {"id": "u1"}


async def test_issuer_and_audience_are_checked_when_set(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    gateway = start(AUTH_ISSUER="https://id.example", AUTH_AUDIENCE="gateway")
    good = token("u1", iss="https://id.example", aud="gateway")
    assert (await call(http_session, gateway, ME, token=good)).body["data"]["me"] == {"id": "u1"}
    for bad in (token("u1", iss="https://evil.example", aud="gateway"),
                token("u1", iss="https://id.example", aud="other"),
                token("u1")):
        assert (await call(http_session, gateway, ME, token=bad)).status == 401


# -- JWKS ---------------------------------------------------------------------------------------
@pytest_asyncio.fixture(loop_scope="session")
async def key_server() -> AsyncIterator[dict[str, Any]]:
    """A local identity provider's JWKS endpoint, with an RSA and an EC key."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = []
    for kid, private, alg in (("rsa-1", rsa_key, "RS256"), ("ec-1", ec_key, "ES256")):
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(
            private.public_key()))
        keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
    served = {"count": 0}
    published = {"keys": keys}

    async def jwks(_: web.Request) -> web.Response:
        served["count"] += 1
        return web.json_response({"keys": published["keys"]})

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    async with local_server(app) as url:
        yield {"url": f"{url}/.well-known/jwks.json", "rsa": rsa_key, "ec": ec_key,
               "served": served, "published": published}


PROVIDER = {"AUTH_ISSUER": "https://id.example", "AUTH_AUDIENCE": "gateway"}


def signed(private: Any, alg: str, kid: str, **claims: Any) -> str:
    body = {"sub": "u9", "scope": "read:orders", "exp": int(time.time()) + 600,
            "iss": "https://id.example", "aud": "gateway", **claims}
    return jwt.encode(body, private, algorithm=alg, headers={"kid": kid})


async def test_rs256_and_es256_tokens_verify_against_the_jwks(
    start: Callable[..., Gateway], key_server: dict[str, Any],
    http_session: aiohttp.ClientSession
) -> None:
    gateway = start(AUTH_JWKS_URL=key_server["url"], AUTH_JWT_SECRET="", **PROVIDER)
    for private, alg, kid in ((key_server["rsa"], "RS256", "rsa-1"),
                              (key_server["ec"], "ES256", "ec-1")):
        answer = await call(http_session, gateway, ME, token=signed(private, alg, kid))
        assert answer.status == 200 and answer.body["data"]["me"] == {"id": "u9"}, alg
    fetched = key_server["served"]["count"]
    for _ in range(5):
        await call(http_session, gateway, ME, token=signed(key_server["rsa"], "RS256", "rsa-1"))
    assert key_server["served"]["count"] == fetched  # the keys are cached
    # A key the provider does not publish, a token signed by another key under a known id,
    # and HS256 when no secret is configured are all refused.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for bad in (signed(key_server["rsa"], "RS256", "rsa-unknown"),
                signed(other, "RS256", "rsa-1"),
                signed(key_server["rsa"], "RS256", "rsa-1", aud="another-app"),
                signed(key_server["rsa"], "RS256", "rsa-1", iss="https://evil.example"),
                token("u9")):
        answer = await call(http_session, gateway, ME, token=bad)
        assert answer.status == 401 and answer.codes() == ["UNAUTHENTICATED"]


async def test_a_revoked_key_stops_verifying_and_a_down_provider_is_a_503(
    start: Callable[..., Gateway], key_server: dict[str, Any],
    http_session: aiohttp.ClientSession
) -> None:
    gateway = start(AUTH_JWKS_URL=key_server["url"], AUTH_JWT_SECRET="",
                    AUTH_JWKS_COOLDOWN_S="0.2", **PROVIDER)
    old = signed(key_server["rsa"], "RS256", "rsa-1")
    assert (await call(http_session, gateway, ME, token=old)).status == 200
    # The provider rotates: rsa-1 is gone, rsa-2 arrives. A token naming rsa-2 makes the
    # gateway fetch the set again, after which rsa-1 is no longer trusted.
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.get_default_algorithms()["RS256"].to_jwk(
        new_key.public_key()))
    key_server["published"]["keys"] = [{**jwk, "kid": "rsa-2", "alg": "RS256", "use": "sig"}]
    await asyncio.sleep(0.3)  # past the cooldown between refetches
    fresh = await call(http_session, gateway, ME, token=signed(new_key, "RS256", "rsa-2"))
    assert fresh.status == 200
    assert (await call(http_session, gateway, ME, token=old)).status == 401

    down = start(AUTH_JWKS_URL=f"http://127.0.0.1:{free_port()}/jwks.json",
                 AUTH_JWT_SECRET="", **PROVIDER)
    answer = await call(http_session, down, ME, token=old)
    assert answer.status == 503 and answer.codes() == ["AUTHENTICATION_UNAVAILABLE"]


def test_the_token_command_prints_a_token_the_gateway_accepts() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app", "token", "--sub", "u5", "--scope", "read:orders admin"],
        cwd=ROOT, env={"AUTH_JWT_SECRET": JWT_SECRET, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True)
    claims = jwt.decode(out.stdout.strip(), JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "u5" and claims["scope"] == "read:orders admin"
    assert claims["exp"] > time.time() + 3600
