"""Who is calling: the bearer token's subject and scopes, checked with pyjwt.

`Authorization: Bearer <JWT>`: HS256 with `AUTH_JWT_SECRET` (development), RS256/ES256 with
the keys of `AUTH_JWKS_URL` (production); issuer, audience, expiry and not-before are checked
with `AUTH_LEEWAY_S` of leeway. No token: anonymous. A token that does not verify is refused
(401 UNAUTHENTICATED), never downgraded to anonymous: a client must learn its token is bad.
With DEV_MODE, `X-User-Id` names the caller instead (development only).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from app.config.settings import Settings
from app.core.errors import HTTPRefusal

SCOPES = frozenset({"read:catalog", "read:orders", "write:orders", "write:reviews", "admin"})
# What the development X-User-Id caller may do: a signed-in customer, not an admin.
DEV_SCOPES = frozenset({"read:catalog", "read:orders", "write:orders", "write:reviews"})
ASYMMETRIC = ["RS256", "ES256"]
USER_HEADER = "x-user-id"
USER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Viewer:
    """The caller. `id` is None for an anonymous one."""

    id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    tier: str = "anonymous"  # rate-limit tier: anonymous, authenticated or gold
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


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The key set is cached for 5 minutes and refetched for an unknown key id; no per-key
        # cache (PyJWT's never expires, so a key the provider revoked would stay trusted).
        self._jwks = (jwt.PyJWKClient(settings.auth_jwks_url, cache_keys=False, lifespan=300,
                                      timeout=5, cooldown_duration=settings.auth_jwks_cooldown_s)
                      if settings.auth_jwks_url else None)

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
        tier = "gold" if claims.get("tier") == "gold" else "authenticated"
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
        if algorithm == "HS256" and self.settings.auth_jwt_secret:
            key: Any = self.settings.auth_jwt_secret
        elif algorithm in ASYMMETRIC and self._jwks is not None:
            try:
                # PyJWKClient fetches over blocking HTTP when a key id is new: off the loop.
                key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
            except (jwt.PyJWKClientConnectionError, jwt.PyJWKSetError) as err:
                # The identity provider's fault, not the token's: say so, and not 401.
                raise HTTPRefusal(503, f"The identity provider's keys are unavailable: {err}",
                                  "AUTHENTICATION_UNAVAILABLE") from None
            except jwt.PyJWKClientError as err:
                raise _refuse(f"The token's signing key is unknown: {err}") from None
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
