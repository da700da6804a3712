"""Who is calling: the bearer token's subject, scopes and rate tier, checked with pyjwt.

`Authorization: Bearer <JWT>`: RS256/ES256 against the keys of `AUTH_JWKS_URL` (an OAuth 2.0
authorization server: `make run` uses the reference one, services/auth.py), or HS256 with
`AUTH_JWT_SECRET` (the tests' development tokens). Issuer, audience, expiry and not-before are
checked with `AUTH_LEEWAY_S` of leeway. No token: anonymous. A token that does not verify is
refused (401 UNAUTHENTICATED), never downgraded to anonymous: a client must learn its token
is bad. With DEV_MODE, `X-User-Id` names the caller instead (development only).

Each published key verifies only with its own algorithm (RS256 for an RSA key, ES256 for a
P-256 one), whatever the token's header says: an HS256 token "signed" with a public key
(algorithm confusion) never meets that key.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from app.config.settings import Settings
from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.errors import HTTPRefusal

SCOPES = frozenset({"read:catalog", "read:orders", "write:orders", "write:reviews", "admin"})
# What the development X-User-Id caller may do: a signed-in customer, not an admin.
DEV_SCOPES = frozenset({"read:catalog", "read:orders", "write:orders", "write:reviews"})
ASYMMETRIC = ["RS256", "ES256"]
# A published key's algorithm by its type: the only one it verifies.
KEY_ALGORITHMS: dict[tuple[Any, Any], str] = {("RSA", None): "RS256", ("EC", "P-256"): "ES256"}
log = logging.getLogger("gateway.auth")
USER_HEADER = "x-user-id"
USER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Viewer:
    """The caller. `id` is None for an anonymous one."""

    id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    # Rate-limit tier: anonymous, authenticated (signed in), or a token's `tier` claim
    # that has a budget (RATE_LIMIT_GOLD, RATE_LIMIT_TIERS).
    tier: str = "anonymous"
    # When the gateway stops accepting the token (its `exp` plus AUTH_LEEWAY_S), in seconds
    # since the epoch; None without one. A long-lived connection (a subscription) ends then.
    valid_until: float | None = None

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def may(self, scope: str) -> bool:
        return scope in self.scopes or self.admin

    def owns(self, item: Mapping[str, Any], owner_field: str = "user_id") -> bool:
        """Whether the item is this caller's own (an admin owns everything): the one rule
        that needs a loaded object, such as whose order it is."""
        return self.admin or (self.id is not None and item.get(owner_field) == self.id)


ANONYMOUS = Viewer()


def _refuse(reason: str) -> HTTPRefusal:
    return HTTPRefusal(401, reason, "UNAUTHENTICATED",
                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class KeysUnavailable(Exception):
    """The identity provider's key set cannot be read (and none is cached)."""


Fetch = Callable[[], Awaitable[Any]]


class KeySet:
    """The identity provider's public keys, by key id, cached for `ttl_s`.

    A token naming a key id the set lacks makes it fetch the set again (the provider rotated
    its keys), at most once per `cooldown_s`: tokens with made-up ids must not make the
    gateway hammer the provider. Concurrent requests share one fetch. A refetch replaces
    the set, so a key the provider stopped publishing stops verifying. When a refetch fails
    the cached keys stay in use (a provider outage must not sign everyone out), and it is
    tried again after `cooldown_s`."""

    def __init__(self, fetch: Fetch, ttl_s: float, cooldown_s: float,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self._fetch = fetch
        self.ttl_s = ttl_s
        self.cooldown_s = cooldown_s
        self._now = clock.monotonic
        self._keys: dict[str, tuple[str, Any]] = {}  # kid -> (algorithm, public key)
        self._fresh_until = -float("inf")
        self._unknown_refetch_at = -float("inf")
        self._inflight: asyncio.Task[None] | None = None
        self._error: str | None = None  # why the last fetch failed, until one succeeds

    async def key(self, kid: str) -> tuple[str, Any] | None:
        """The algorithm and key of `kid`, None when the provider does not publish it."""
        if not self._keys and self._error is not None and self._now() < self._fresh_until:
            # Down, nothing cached: refused as unavailable until the next try is due.
            raise KeysUnavailable(self._error)
        fetched = False
        if self._now() >= self._fresh_until or (
                kid not in self._keys and self._inflight is not None
                and not self._inflight.done()):
            # Stale, or another request's fetch is under way (likely for this very key id,
            # just rotated in): its answer, rather than a refusal for the cooldown.
            await self._refresh()
            fetched = True
        found = self._keys.get(kid)
        if found is None and not fetched \
                and self._now() - self._unknown_refetch_at >= self.cooldown_s:
            self._unknown_refetch_at = self._now()
            await self._refresh()
            found = self._keys.get(kid)
        return found

    async def _refresh(self) -> None:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._load())
        # shield: a caller cancelled (its client went away) does not cancel the others' fetch
        await asyncio.shield(self._inflight)

    async def _load(self) -> None:
        try:
            published = await self._fetch()
            keys = parse_jwks(published)
        except Exception as err:  # the provider's trouble, whatever it is
            self._fresh_until = self._now() + self.cooldown_s
            self._error = str(err) or type(err).__name__
            if not self._keys:
                raise KeysUnavailable(self._error) from None
            log.warning("identity provider's keys not refreshed (%s): the cached ones stay",
                        err)
            return
        self._keys, self._error = keys, None
        self._fresh_until = self._now() + self.ttl_s


def parse_jwks(published: Any) -> dict[str, tuple[str, Any]]:
    """The signing keys of a JWKS document, each with the one algorithm it verifies. Keys
    of other types (a symmetric `oct` key: a secret), without an id or for encryption are
    left out."""
    if not isinstance(published, dict) or not isinstance(published.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, tuple[str, Any]] = {}
    for item in published["keys"]:
        if not isinstance(item, dict) or not isinstance(item.get("kid"), str):
            continue
        algorithm = KEY_ALGORITHMS.get((item.get("kty"), item.get("crv")))
        if algorithm is None or item.get("use", "sig") != "sig" \
                or item.get("alg", algorithm) != algorithm:
            continue
        try:
            keys[item["kid"]] = (algorithm, jwt.PyJWK(item, algorithm).key)
        except jwt.PyJWTError:
            continue
    return keys


class Authenticator:
    def __init__(self, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self._tiers = settings.rate_limit_budgets()
        self._session: aiohttp.ClientSession | None = None
        # No per-key cache beyond the set's: a key the provider revoked must stop verifying.
        self.keys = (KeySet(self._fetch_jwks, settings.auth_jwks_ttl_s,
                            settings.auth_jwks_cooldown_s, clock)
                     if settings.auth_jwks_url else None)

    async def _fetch_jwks(self) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        async with self._session.get(self.settings.auth_jwks_url) as response:
            response.raise_for_status()
            return await response.json(content_type=None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def viewer(self, headers: Any) -> Viewer:
        """The caller named by the request's headers; raises a 401 refusal for a bad token."""
        authorization = headers.get("authorization")
        if authorization is None:
            user = headers.get(USER_HEADER) if self.settings.dev_mode else None
            if user:
                if not USER_ID.fullmatch(user):
                    raise HTTPRefusal(400, "X-User-Id must be a user id (letters, digits, - "
                                      "and _, at most 64)", "BAD_USER_INPUT")
                return Viewer(user, DEV_SCOPES, "authenticated")
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _refuse("The Authorization header must be `Bearer <token>`")
        claims = await self.claims(token.strip())
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise _refuse("The token has no subject (`sub`)")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise _refuse("The token's `scope` must be a space-separated string")
        scopes = frozenset(scope.split()) & SCOPES
        # The API client's rate tier (the authorization server's `tier` claim); a tier this
        # gateway has no budget for, or none (a user's token), is the signed-in default.
        tier = claims.get("tier")
        if not isinstance(tier, str) or tier == "anonymous" or tier not in self._tiers:
            tier = "authenticated"
        expires = claims.get("exp")  # required, and checked as a number by pyjwt
        valid_until = (float(expires) + self.settings.auth_leeway_s
                       if isinstance(expires, int | float) else None)
        return Viewer(subject, scopes, tier, valid_until)

    async def viewer_of_params(self, params: Any) -> Viewer:
        """The caller named by a WebSocket's `connection_init` payload: its keys as the
        HTTP request's headers (`Authorization`, any case; `X-User-Id` in DEV_MODE).
        Raises a 401 refusal for a bad token, as `viewer` does."""
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise _refuse("The connection_init payload must be an object")
        headers = {str(k).lower(): v for k, v in params.items() if isinstance(v, str)}
        return await self.viewer(headers)

    async def claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _refuse("The bearer token is not a JWT") from None
        algorithm = header.get("alg")
        kid = header.get("kid")
        if algorithm == "HS256" and self.settings.auth_jwt_secret:
            key: Any = self.settings.auth_jwt_secret
        elif self.keys is not None and isinstance(kid, str):
            try:
                found = await self.keys.key(kid)
            except KeysUnavailable as err:
                # The identity provider's fault, not the token's: say so, and not 401.
                raise HTTPRefusal(503, f"The identity provider's keys are unavailable: {err}",
                                  "AUTHENTICATION_UNAVAILABLE") from None
            if found is None:
                raise _refuse(f"The token's signing key {kid!r} is not published by the "
                              "identity provider")
            key_algorithm, key = found
            if algorithm != key_algorithm:
                # Algorithm confusion (HS256 with the public key as the secret, or any other
                # algorithm than the key's own): refused before any signature check.
                raise _refuse(f"The token says {algorithm!r}, but its key {kid!r} signs "
                              f"with {key_algorithm}")
        elif self.keys is not None and algorithm in ASYMMETRIC:
            raise _refuse("The token names no signing key (`kid` in its header)")
        else:
            raise _refuse(f"Tokens signed with {algorithm!r} are not accepted here")
        try:
            return jwt.decode(
                token, key, algorithms=[algorithm],
                audience=self.settings.auth_audience or None,
                issuer=self.settings.auth_issuer or None,
                leeway=self.settings.auth_leeway_s,
                options={"require": ["exp", "sub"],
                         "verify_aud": bool(self.settings.auth_audience)},
            )
        except jwt.ExpiredSignatureError:
            raise _refuse("The bearer token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _refuse("The bearer token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise _refuse("The bearer token is for another audience than this API "
                          f"({self.settings.auth_audience})") from None
        except jwt.PyJWTError as err:
            raise _refuse(f"The bearer token is not valid: {err}") from None


def development_token(settings: Settings, subject: str, scopes: str, ttl_s: int = 86_400,
                      tier: str | None = None) -> str:
    """An HS256 token for trying the graph (`make token`)."""
    if not settings.auth_jwt_secret:
        raise ValueError("AUTH_JWT_SECRET is not set")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "scope": scopes, "iat": now, "nbf": now,
                              "exp": now + ttl_s}
    if settings.auth_issuer:
        claims["iss"] = settings.auth_issuer
    if settings.auth_audience:
        claims["aud"] = settings.auth_audience
    if tier:
        claims["tier"] = tier
    return jwt.encode(claims, settings.auth_jwt_secret, algorithm="HS256")
