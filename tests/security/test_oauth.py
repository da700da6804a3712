"""OAuth 2.0 against the real reference authorization server (services/auth.py) and a gateway
that checks tokens as `make run`'s does (through the server's JWKS, no HS256 secret): the
authorization code flow with PKCE driven by an HTTP client, refresh tokens rotated on use, a
key rotation under load, and the tokens a gateway must refuse."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.seed import Dataset
from tests.harness import ROOT, Gateway, Services, gateways, http, running_services
from tests.security.conftest import call

ME = "{ me { id } }"
CHEAP = "{ topProducts(first: 2) { id } }"
CHEAP_COST = 2  # by the IBM cost directives: two products at 1, their scalars at 0
SANDBOX = ("sandbox", "sandbox-secret-0123456789abcdef0123456789")  # free tier, read:catalog
ACME = ("acme-shop", "acme-shop-secret-0123456789abcdef012345")  # standard, every scope
BIGCORP = ("bigcorp", "bigcorp-secret-0123456789abcdef0123456789")  # gold
REDIRECT = "http://127.0.0.1:53682/callback"  # storefront's loopback redirect (any port)


@pytest.fixture(scope="module")
def oservices(stmp: Path) -> Iterator[Services]:
    """The six services and the authorization server, in one process."""
    with running_services(stmp / "oauth", auth=True) as svc:
        yield svc


@pytest.fixture(scope="module")
def ostart(stmp: Path, oservices: Services) -> Iterator[Callable[..., Gateway]]:
    with gateways(stmp, oservices, DEV_MODE="false", **oservices.oauth_env()) as start_:
        yield start_


@pytest.fixture(scope="module")
def ogateway(ostart: Callable[..., Gateway]) -> Gateway:
    """A production-mode gateway checking tokens through the server's JWKS."""
    return ostart()


def issuer(services: Services) -> str:
    return services.url("auth")


async def token_request(session: aiohttp.ClientSession, services: Services,
                        form: dict[str, str], client: tuple[str, str] | None = None
                        ) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": aiohttp.encode_basic_auth(*client)} if client else {}
    async with session.post(issuer(services) + "/oauth/token", data=form,
                            headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def client_token(session: aiohttp.ClientSession, services: Services,
                       client: tuple[str, str], **form: str) -> str:
    status, body = await token_request(session, services,
                                       {"grant_type": "client_credentials", **form}, client)
    assert status == 200, body
    assert body["token_type"] == "Bearer"
    return str(body["access_token"])


class Form(HTMLParser):
    """The login page's form: its action and every input's name and value."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = values.get("action", "")
        elif tag == "input" and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


async def authorize(session: aiohttp.ClientSession, services: Services, username: str,
                    challenge: str, state: str, scope: str = "read:catalog read:orders"
                    ) -> str:
    """The user's side of the flow: the authorization request, the login form, and the
    redirect back to the app with a code; returns the code."""
    params = {"response_type": "code", "client_id": "storefront", "redirect_uri": REDIRECT,
              "scope": scope, "state": state, "code_challenge": challenge,
              "code_challenge_method": "S256"}
    async with session.get(issuer(services) + "/oauth/authorize", params=params,
                           allow_redirects=False) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert resp.headers["X-Frame-Options"] == "DENY"
        form = Form()
        form.feed(await resp.text())
    assert form.action == "/oauth/authorize" and form.fields["state"] == state
    wrong = {**form.fields, "username": username, "password": "not-the-password"}
    async with session.post(issuer(services) + form.action, data=wrong,
                            allow_redirects=False) as resp:
        assert resp.status == 401 and "Location" not in resp.headers  # no code, no redirect
    filled = {**form.fields, "username": username, "password": "password"}
    async with session.post(issuer(services) + form.action, data=filled,
                            allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        location = urlsplit(resp.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == [state]
    return query["code"][0]


async def test_the_authorization_code_flow_with_pkce_and_rotated_refresh_tokens(
    oservices: Services, ogateway: Gateway, seed: Dataset, http_session: aiohttp.ClientSession
) -> None:
    user = seed.users["u42"]
    verifier, challenge = pkce()
    code = await authorize(http_session, oservices, user["username"], challenge, "st-1")
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                "client_id": "storefront"}
    # A public client: the code alone, without the verifier, gets nothing.
    status, body = await token_request(http_session, oservices, exchange)
    assert status == 400 and body["error"] == "invalid_request"
    status, body = await token_request(http_session, oservices,
                                       {**exchange, "code_verifier": pkce()[0]})
    assert status == 400 and body["error"] == "invalid_grant"  # another verifier
    status, tokens = await token_request(http_session, oservices,
                                         {**exchange, "code_verifier": verifier})
    assert status == 200, tokens
    assert tokens["scope"] == "read:catalog read:orders" and tokens["refresh_token"]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "u42" and claims["iss"] == issuer(oservices)
    assert claims["aud"] == "urn:federation-gateway" and "tier" not in claims
    assert {"exp", "iat", "jti"} <= set(claims) and claims["client_id"] == "storefront"
    # The gateway accepts it: the caller is the user who signed in.
    answer = await call(http_session, ogateway, ME, token=tokens["access_token"])
    assert answer.status == 200 and answer.body["data"]["me"] == {"id": "u42"}

    # Refresh: a new access token and a new refresh token; the old one is spent.
    refresh = {"grant_type": "refresh_token", "client_id": "storefront"}
    first = tokens["refresh_token"]
    status, renewed = await token_request(http_session, oservices,
                                          {**refresh, "refresh_token": first})
    assert status == 200, renewed
    second = renewed["refresh_token"]
    assert second != first and renewed["access_token"] != tokens["access_token"]
    answer = await call(http_session, ogateway, ME, token=renewed["access_token"])
    assert answer.body["data"]["me"] == {"id": "u42"}
    status, body = await token_request(http_session, oservices,
                                       {**refresh, "refresh_token": first})
    assert status == 400 and body["error"] == "invalid_grant"
    # The replay revoked the whole family: the thief's or the app's newest token is dead too.
    status, body = await token_request(http_session, oservices,
                                       {**refresh, "refresh_token": second})
    assert status == 400 and body["error"] == "invalid_grant"
    # A code is good once (and its second use would revoke what the first gave).
    status, body = await token_request(http_session, oservices,
                                       {**exchange, "code_verifier": verifier})
    assert status == 400 and body["error"] == "invalid_grant"


async def test_authorization_requests_need_pkce_and_a_registered_redirect(
    oservices: Services, http_session: aiohttp.ClientSession
) -> None:
    base = {"response_type": "code", "client_id": "storefront", "redirect_uri": REDIRECT,
            "scope": "read:orders", "state": "s"}
    async with http_session.get(issuer(oservices) + "/oauth/authorize", params=base,
                                allow_redirects=False) as resp:
        # Without PKCE the app is sent back with the error, never with a login form.
        assert resp.status == 302
        assert parse_qs(urlsplit(resp.headers["Location"]).query)["error"] == [
            "invalid_request"]
    evil = {**base, "redirect_uri": "https://evil.example/callback",
            "code_challenge": pkce()[1], "code_challenge_method": "S256"}
    async with http_session.get(issuer(oservices) + "/oauth/authorize", params=evil,
                                allow_redirects=False) as resp:
        assert resp.status == 400 and "Location" not in resp.headers


async def test_a_client_asking_for_a_scope_it_may_not_have_gets_invalid_scope(
    oservices: Services, http_session: aiohttp.ClientSession
) -> None:
    status, body = await token_request(
        http_session, oservices, {"grant_type": "client_credentials",
                                  "scope": "read:catalog read:orders"}, SANDBOX)
    assert status == 400 and body["error"] == "invalid_scope"
    status, body = await token_request(
        http_session, oservices, {"grant_type": "client_credentials"},
        (SANDBOX[0], "a-wrong-secret-0123456789abcdef0123456789"))
    assert status == 401 and body["error"] == "invalid_client"
    # No scope asked: everything the client may have, and its tier.
    claims = jwt.decode(await client_token(http_session, oservices, SANDBOX),
                        options={"verify_signature": False})
    assert claims["scope"] == "read:catalog" and claims["tier"] == "free"
    assert claims["sub"] == "sandbox"


def test_discovery_names_the_endpoints_and_the_jwks_the_keys(oservices: Services) -> None:
    status, _, config = http("GET", issuer(oservices) + "/.well-known/openid-configuration")
    assert status == 200 and config["issuer"] == issuer(oservices)
    for name, path in (("jwks_uri", "/jwks.json"), ("token_endpoint", "/oauth/token"),
                       ("authorization_endpoint", "/oauth/authorize")):
        assert config[name] == issuer(oservices) + path
    assert config["code_challenge_methods_supported"] == ["S256"]
    _, _, jwks = http("GET", config["jwks_uri"])
    assert jwks["keys"] and all(k["alg"] == "RS256" and k["kty"] == "RSA" and "d" not in k
                                for k in jwks["keys"])


async def test_a_key_rotation_fails_no_request(
    oservices: Services, ogateway: Gateway, http_session: aiohttp.ClientSession
) -> None:
    """Clients keep calling while the server rotates its key: tokens signed by the old key
    keep working (it stays published), and the new key's are accepted at once (the
    gateway fetches the set again for the new key id)."""
    old_token = await client_token(http_session, oservices, ACME)
    assert (await call(http_session, ogateway, ME, token=old_token)).status == 200
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    rotated, busy = asyncio.Event(), asyncio.Event()
    statuses: list[tuple[str, int]] = []  # (which token, status), in order of answers
    new_kids: set[str] = set()

    async def with_the_old_token() -> None:
        while not rotated.is_set() or sum(w == "old-after" for w, _ in statuses) < 20:
            phase = "old-after" if rotated.is_set() else "old-before"
            answer = await call(http_session, ogateway, ME, token=old_token)
            statuses.append((phase, answer.status))
            if len(statuses) >= 20:
                busy.set()

    async def with_fresh_tokens() -> None:
        while not rotated.is_set() or sum(w == "new" for w, _ in statuses) < 20:
            fresh = await client_token(http_session, oservices, ACME)
            kid = jwt.get_unverified_header(fresh)["kid"]
            answer = await call(http_session, ogateway, ME, token=fresh)
            statuses.append(("new" if kid != old_kid else "fresh-old-key", answer.status))
            if len(statuses) >= 20:
                busy.set()
            if kid != old_kid:
                new_kids.add(kid)

    async def rotate() -> None:
        await busy.wait()  # rotate while the callers are at it
        async with http_session.post(issuer(oservices) + "/_keys/rotate") as resp:
            body = await resp.json()
        assert body["published"] == [old_kid, body["signing"]]  # both, while they overlap
        rotated.set()

    await asyncio.wait_for(asyncio.gather(*(with_the_old_token() for _ in range(3)),
                                          *(with_fresh_tokens() for _ in range(3)), rotate()),
                           timeout=120)
    failed = [(w, s) for w, s in statuses if s != 200]
    assert not failed, failed
    assert len(new_kids) == 1 and sum(w == "old-after" for w, _ in statuses) >= 20
    _, _, jwks = http("GET", issuer(oservices) + "/jwks.json")
    assert {k["kid"] for k in jwks["keys"]} == {old_kid, *new_kids}


async def test_an_expired_token_and_a_token_for_another_api_are_401(
    oservices: Services, ogateway: Gateway, http_session: aiohttp.ClientSession
) -> None:
    # The server issues a token as if two hours ago: its 15 minutes are long gone.
    assert http("PUT", issuer(oservices) + "/_clock", {"offset_s": -7200})[0] == 200
    try:
        expired = await client_token(http_session, oservices, ACME)
    finally:
        http("PUT", issuer(oservices) + "/_clock", {"offset_s": 0})
    answer = await call(http_session, ogateway, ME, token=expired)
    assert answer.status == 401 and answer.codes() == ["UNAUTHENTICATED"]
    assert "expired" in answer.body["errors"][0]["message"]
    assert answer.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'

    # A genuine token from the same server, for another resource server (RFC 8707).
    other = await client_token(http_session, oservices, ACME, resource="urn:reporting-api")
    assert jwt.decode(other, options={"verify_signature": False})["aud"] == "urn:reporting-api"
    answer = await call(http_session, ogateway, ME, token=other)
    assert answer.status == 401 and answer.codes() == ["UNAUTHENTICATED"]
    assert "audience" in answer.body["errors"][0]["message"]
    # A client may not ask for tokens for a resource it is not registered for.
    status, body = await token_request(
        http_session, oservices, {"grant_type": "client_credentials",
                                  "resource": "urn:reporting-api"}, SANDBOX)
    assert status == 400 and body["error"] == "invalid_target"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_an_hs256_token_signed_with_the_public_key_is_401(
    oservices: Services, ogateway: Gateway, http_session: aiohttp.ClientSession
) -> None:
    """Algorithm confusion: a verifier that takes the token's `alg` at its word would check
    this HMAC with the public key's bytes, which anyone can fetch, as the secret."""
    _, _, jwks = http("GET", issuer(oservices) + "/jwks.json")
    published = jwks["keys"][-1]
    pem = jwt.PyJWK(published).key.public_bytes(Encoding.PEM,
                                                PublicFormat.SubjectPublicKeyInfo)
    claims = {"iss": issuer(oservices), "aud": "urn:federation-gateway", "sub": "u1",
              "scope": "read:orders admin", "exp": int(time.time()) + 600,
              "iat": int(time.time())}
    for secret in (pem, json.dumps(published).encode()):
        for header in ({"alg": "HS256", "typ": "JWT", "kid": published["kid"]},
                       {"alg": "HS256", "typ": "JWT"}):
            signing_input = f"{b64(json.dumps(header).encode())}." \
                            f"{b64(json.dumps(claims).encode())}"
            signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
            forged = f"{signing_input}.{b64(signature)}"
            answer = await call(http_session, ogateway, ME, token=forged)
            assert answer.status == 401 and answer.codes() == ["UNAUTHENTICATED"], header
    # (The same claims signed by the server's key are fine: only the forgery is refused.)
    genuine = await client_token(http_session, oservices, ACME)
    assert (await call(http_session, ogateway, ME, token=genuine)).status == 200


async def test_the_tier_claim_selects_the_rate_limit(
    oservices: Services, ostart: Callable[..., Gateway], seed: Dataset,
    http_session: aiohttp.ClientSession
) -> None:
    limited = ostart(RATE_LIMIT_ENABLED="true", RATE_LIMIT_TIERS='{"free": 100, "standard": 400}',
                     RATE_LIMIT_AUTHENTICATED="200", RATE_LIMIT_GOLD="800",
                     RATE_LIMIT_ANONYMOUS="50", RATE_LIMIT_WINDOW_S="3600", MAX_QUERY_COST="50")
    expected = {SANDBOX: "100", ACME: "400", BIGCORP: "800"}
    for client, limit in expected.items():
        issued = await client_token(http_session, oservices, client)
        answer = await call(http_session, limited, CHEAP, token=issued)
        assert answer.status == 200 and answer.headers["RateLimit-Limit"] == limit, client
        assert int(answer.headers["RateLimit-Remaining"]) == int(limit) - CHEAP_COST
    # A user's token (the storefront's) has no tier: the signed-in default.
    verifier, challenge = pkce()
    code = await authorize(http_session, oservices, seed.users["u7"]["username"], challenge,
                           "st-2")
    status, tokens = await token_request(http_session, oservices, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": "storefront", "code_verifier": verifier})
    assert status == 200
    answer = await call(http_session, limited, CHEAP, token=tokens["access_token"])
    assert answer.headers["RateLimit-Limit"] == "200"
    assert (await call(http_session, limited, CHEAP)).headers["RateLimit-Limit"] == "50"
    # The free client spends its own bucket (its id's, whichever token): 98 left after the
    # first query, 2 a query, so the 50th more is refused.
    issued = await client_token(http_session, oservices, SANDBOX)
    more = (100 - CHEAP_COST) // CHEAP_COST + 1
    answers = [await call(http_session, limited, CHEAP, token=issued) for _ in range(more)]
    assert [a.status for a in answers[-2:]] == [200, 429]


def test_make_token_gets_a_client_credentials_token_the_gateway_accepts(
    oservices: Services, ogateway: Gateway
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app", "token", "--client", BIGCORP[0], "--scope",
         "read:catalog"],
        cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "CLIENT_SECRET": BIGCORP[1],
             "AUTH_ISSUER": issuer(oservices)})
    issued = out.stdout.strip()
    claims = jwt.decode(issued, options={"verify_signature": False})
    assert claims["sub"] == "bigcorp" and claims["tier"] == "gold"
    assert claims["scope"] == "read:catalog"
    status, _, body = http("POST", ogateway.url + "/graphql", {"query": CHEAP},
                           headers={"Authorization": f"Bearer {issued}"})
    assert status == 200 and "errors" not in body
    refused = subprocess.run(
        [sys.executable, "-m", "app", "token", "--client", BIGCORP[0], "--scope", "admin"],
        cwd=ROOT, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "CLIENT_SECRET": BIGCORP[1],
             "AUTH_ISSUER": issuer(oservices)})
    assert refused.returncode == 2 and "invalid_scope" in refused.stderr


def test_make_token_signs_a_seed_user_in_through_the_code_flow(
    oservices: Services, ogateway: Gateway, seed: Dataset
) -> None:
    env = {"PATH": "/usr/bin:/bin", "AUTH_ISSUER": issuer(oservices)}
    out = subprocess.run(
        [sys.executable, "-m", "app", "token", "--user", seed.users["u65"]["username"],
         "--scope", "read:orders"],
        cwd=ROOT, capture_output=True, text=True, check=True, env=env)
    issued = out.stdout.strip()
    assert jwt.decode(issued, options={"verify_signature": False})["client_id"] == "storefront"
    status, _, body = http("POST", ogateway.url + "/graphql", {"query": ME},
                           headers={"Authorization": f"Bearer {issued}"})
    assert status == 200 and body["data"]["me"] == {"id": "u65"}
    refused = subprocess.run(
        [sys.executable, "-m", "app", "token", "--user", "u65", "--password", "wrong"],
        cwd=ROOT, capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "wrong password" in refused.stderr


def jwks_fetches(services: Services) -> int:
    return int(services.stats("auth")["requests"].get("GET /jwks.json", 0))


async def test_a_key_published_ahead_is_known_before_made_up_key_ids_can_hold_it_off(
    oservices: Services, ostart: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    """A gateway fetches the key set again for an unknown key id at most once per
    AUTH_JWKS_COOLDOWN_S, so tokens with made-up key ids can spend that refetch just before
    a rotation. A key that starts signing at once is then refused until the cooldown ends;
    one published ahead (as the server's own rotations do) was fetched before, and passes."""
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def made_up() -> str:
        return jwt.encode({"sub": "u1", "exp": int(time.time()) + 600,
                           "iss": issuer(oservices), "aud": "urn:federation-gateway"},
                          forger, algorithm="RS256", headers={"kid": secrets.token_hex(8)})

    async def status(gateway: Gateway, issued: str) -> int:
        return (await call(http_session, gateway, ME, token=issued)).status

    # Published ahead: a gateway reading the set meanwhile has the next key.
    http("POST", issuer(oservices) + "/_keys/rotate", {"publish_ahead_s": 3600})
    ahead = ostart(AUTH_JWKS_COOLDOWN_S="3600")
    assert await status(ahead, await client_token(http_session, oservices, ACME)) == 200
    assert await status(ahead, made_up()) == 401  # spends the refetch
    fetched = jwks_fetches(oservices)
    http("POST", issuer(oservices) + "/_keys/activate")
    fresh = await client_token(http_session, oservices, ACME)
    assert await status(ahead, fresh) == 200
    assert jwks_fetches(oservices) == fetched  # known already: no fetch was needed

    # Signing at once, after the same made-up key ids: refused for the cooldown.
    at_once = ostart(AUTH_JWKS_COOLDOWN_S="3600")
    assert await status(at_once, fresh) == 200
    assert await status(at_once, made_up()) == 401
    http("POST", issuer(oservices) + "/_keys/rotate", {"publish_ahead_s": 0})
    assert await status(at_once, await client_token(http_session, oservices, ACME)) == 401
