"""auth: the reference authorization server (OAuth 2.0 and OpenID Connect discovery), built
on authlib's grants, standing in for a company's identity provider.

- `GET /.well-known/openid-configuration`, `GET /jwks.json` (every published public key);
- `POST /oauth/token`: client credentials for registered API clients (allowed scopes, a rate
  tier, the resource servers they may ask tokens for), the authorization code with PKCE (S256
  only) for user-facing apps, refresh tokens rotated on use: a refresh token already used
  revokes its whole family (the token was stolen, or the app is confused);
- `GET/POST /oauth/authorize`: a minimal login form for the seed users (development only).

Access tokens are JWTs (RFC 9068 `typ: at+jwt`) with `iss`, `aud`, `sub`, `scope`, `exp`,
`iat`, `jti`, `client_id` and, for API clients, `tier`. Keys rotate every AUTH_KEY_ROTATION_S:
the new key is published AUTH_KEY_PUBLISH_AHEAD_S before it signs, and the previous one stays
in the JWKS for AUTH_KEY_OVERLAP_S, so that tokens it signed keep verifying until they expire.
Reference-only hooks beside the contract's: `POST /_keys/rotate` (`{"publish_ahead_s": n}`,
default 0: signing at once), `/_keys/activate` (the key published ahead signs now),
`/_keys/retire` (end the overlap now) and `PUT /_clock` (issue tokens as if at another time:
expired ones, in tests).
State (codes, refresh tokens, keys) lives in memory: a restart signs everyone out.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import ipaddress
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from authlib.common.security import generate_token
from authlib.oauth2 import AuthorizationServer, OAuth2Error
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    OAuth2Payload,
    OAuth2Request,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from services.context import Context
from services.http import ApiError, JSONResponse, bad_input, read_object

log = logging.getLogger("services.auth")

SCOPES = ("read:catalog", "read:orders", "write:orders", "write:reviews")
# A second resource server the seed knows of, so that a client can hold a token that is
# valid, but for another API than the gateway (RFC 8707 `resource`).
OTHER_RESOURCE = "urn:reporting-api"
CODE_TTL_S = 120.0  # RFC 6749 recommends at most 10 minutes; a redirect takes seconds


@dataclass(frozen=True)
class Client(ClientMixin):
    """A registered client. Confidential clients have a secret; public ones (a single-page
    or native app) have none and must use PKCE."""

    client_id: str
    secret: str | None
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    tier: str | None = None
    redirect_uris: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()  # beyond the gateway's audience

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scope if the client may have all of it (no scope: everything it
        may have); None, which authlib answers `invalid_scope`, for any scope beyond."""
        if not scope:
            return " ".join(self.scopes)
        asked = scope_to_list(scope)
        return " ".join(dict.fromkeys(asked)) if set(asked) <= set(self.scopes) else None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        if redirect_uri in self.redirect_uris:
            return True
        # RFC 8252 7.3: a native app listens on a loopback port it picks when it starts.
        asked = urlsplit(redirect_uri)
        return any(_loopback(asked) and _loopback(ok := urlsplit(uri))
                   and (asked.scheme, asked.hostname, asked.path)
                   == (ok.scheme, ok.hostname, ok.path) and not asked.query
                   for uri in self.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret is not None and hmac.compare_digest(self.secret, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.secret is None:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


def _loopback(parts: Any) -> bool:
    if parts.scheme != "http" or not parts.hostname:
        return False
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


# The seed clients (README: For third-party developers). Their secrets are development
# values, published here: the gateway refuses them as its own secrets outside DEV_MODE.
CLIENTS = {c.client_id: c for c in (
    Client("sandbox", "sandbox-secret-0123456789abcdef0123456789",
           ("client_credentials",), ("read:catalog",), tier="free"),
    Client("acme-shop", "acme-shop-secret-0123456789abcdef012345",
           ("client_credentials",), SCOPES, tier="standard", resources=(OTHER_RESOURCE,)),
    Client("bigcorp", "bigcorp-secret-0123456789abcdef0123456789",
           ("client_credentials",), ("read:catalog", "read:orders"), tier="gold"),
    # A user-facing app: public (no secret), PKCE, refresh tokens; its users' own scopes.
    Client("storefront", None, ("authorization_code", "refresh_token"), SCOPES,
           redirect_uris=("http://127.0.0.1/callback", "http://localhost/callback")),
)}


@dataclass
class AuthCode(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user_id: str
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float
    resource: str | None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class RefreshToken(TokenMixin):
    token: str
    client_id: str
    user_id: str
    scope: str
    family: str  # every refresh token descended from one authorization
    expires_at: float
    resource: str | None = None
    revoked: bool = False

    def check_client(self, client: ClientMixin) -> bool:
        return bool(client.get_client_id() == self.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return 0

    def is_expired(self) -> bool:
        return False  # checked where it is looked up, on the server's clock

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> Any:
        return None

    def get_client(self) -> ClientMixin:
        return CLIENTS[self.client_id]


@dataclass(frozen=True)
class User:
    id: str
    username: str

    def get_user_id(self) -> str:
        return self.id


@dataclass
class SigningKey:
    key: RSAKey | ECKey
    created: float
    signs_from: float | None = None  # None: published ahead, not signing yet
    activate_at: float = 0.0  # when a key published ahead starts signing
    retire_at: float | None = None  # set once another key signs: published until then

    @property
    def kid(self) -> str:
        return str(self.key.kid)


def new_key(alg: str) -> RSAKey | ECKey:
    params: Any = {"alg": alg, "use": "sig"}
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=params, auto_kid=True)
    return RSAKey.generate_key(2048, parameters=params, auto_kid=True)


@dataclass
class KeyRing:
    """The signing key, the next one published ahead, and the previous ones still published.

    A rotation publishes the new key first and lets it sign only `ahead_s` later: resource
    servers that reread the JWKS meanwhile (the gateway: every AUTH_JWKS_TTL_S) know it
    before the first token it signs, so none depends on fetching the set for an unknown key
    id then (which a gateway rate-limits, and a flood of made-up key ids could hold off). A
    replaced key stays published for `overlap_s` (at least a token's lifetime plus the
    resource servers' leeway), then goes."""

    alg: str
    overlap_s: float
    keys: list[SigningKey] = field(default_factory=list)

    @property
    def signing(self) -> SigningKey:
        return [k for k in self.keys if k.signs_from is not None][-1]

    @property
    def pending(self) -> SigningKey | None:
        return next((k for k in self.keys if k.signs_from is None), None)

    def add(self, key: RSAKey | ECKey, now: float, ahead_s: float = 0.0) -> None:
        if self.pending is not None:
            self.activate(now)  # a rotation asked for during one: the earlier one is done
        self.keys.append(SigningKey(key, now, activate_at=now + ahead_s))
        if ahead_s <= 0 or len(self.keys) == 1:
            self.activate(now)

    def activate(self, now: float) -> None:
        pending = self.pending
        if pending is None:
            return
        signers = [k for k in self.keys if k.signs_from is not None]
        if signers:
            signers[-1].retire_at = now + self.overlap_s
        pending.signs_from = now

    def tick(self, now: float) -> None:
        pending = self.pending
        if pending is not None and pending.activate_at <= now:
            self.activate(now)
        self.keys = [k for k in self.keys if k.retire_at is None or k.retire_at > now]

    def retire_now(self) -> None:
        self.keys = [k for k in self.keys if k.retire_at is None]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.key.as_dict(private=False) for k in self.keys]}

    def described(self) -> dict[str, Any]:
        pending = self.pending
        return {"signing": self.signing.kid, "next": pending.kid if pending else None,
                "published": [k.kid for k in self.keys]}


@dataclass
class AuthSettings:
    issuer: str
    audience: str
    access_ttl_s: int
    refresh_ttl_s: int
    alg: str
    rotation_s: float
    ahead_s: float
    overlap_s: float
    dev_password: str

    @classmethod
    def from_env(cls, issuer: str, environ: Mapping[str, str] | None = None) -> AuthSettings:
        """`issuer`: where this server listens, the default `iss` (AUTH_ISSUER: the address
        its clients and resource servers know it by)."""
        env = os.environ if environ is None else environ
        access_ttl = int(env.get("AUTH_ACCESS_TOKEN_TTL_S", "900"))
        alg = env.get("AUTH_SIGNING_ALG", "RS256")
        if alg not in ("RS256", "ES256"):
            raise ValueError(f"AUTH_SIGNING_ALG must be RS256 or ES256, got {alg!r}")
        settings = cls(
            issuer=env.get("AUTH_ISSUER") or issuer,
            audience=env.get("AUTH_AUDIENCE", "urn:federation-gateway"),
            access_ttl_s=access_ttl,
            refresh_ttl_s=int(env.get("AUTH_REFRESH_TOKEN_TTL_S", str(30 * 86_400))),
            alg=alg,
            rotation_s=float(env.get("AUTH_KEY_ROTATION_S", "86400")),
            # Twice the gateway's default AUTH_JWKS_TTL_S: every gateway has reread the set.
            ahead_s=float(env.get("AUTH_KEY_PUBLISH_AHEAD_S", "600")),
            # A replaced key verifies the tokens it signed until the last one expires (with
            # a resource server's clock-skew leeway on top).
            overlap_s=float(env.get("AUTH_KEY_OVERLAP_S", str(access_ttl + 300))),
            dev_password=env.get("AUTH_DEV_PASSWORD", "password"),
        )
        if settings.access_ttl_s < 1 or settings.refresh_ttl_s < 1:
            raise ValueError("AUTH_ACCESS_TOKEN_TTL_S and AUTH_REFRESH_TOKEN_TTL_S must be "
                             "at least 1")
        if settings.overlap_s < settings.access_ttl_s:
            raise ValueError("AUTH_KEY_OVERLAP_S must be at least AUTH_ACCESS_TOKEN_TTL_S: "
                             "tokens of a replaced key would stop verifying before they expire")
        if settings.rotation_s > 0 and not 0 <= settings.ahead_s < settings.rotation_s:
            raise ValueError("AUTH_KEY_PUBLISH_AHEAD_S must be at least 0 and less than "
                             "AUTH_KEY_ROTATION_S")
        return settings


# What the token endpoint is asked for beyond the grant (RFC 8707 `resource`), for the token
# generator, which authlib calls without the request.
_RESOURCE: ContextVar[str | None] = ContextVar("resource", default=None)


class InvalidTargetError(OAuth2Error):
    error = "invalid_target"  # RFC 8707 2.2


class TokenGenerator(JWTBearerTokenGenerator):
    def __init__(self, state: AuthState) -> None:
        super().__init__(issuer=state.settings.issuer, alg=state.settings.alg,
                         refresh_token_generator=lambda **_: generate_token(48),
                         expires_generator=lambda client, grant_type:
                         state.settings.access_ttl_s)
        self.state = state

    def access_token_generator(self, client: Client, grant_type: str, user: User | None,
                               scope: str) -> str:
        settings = self.state.settings
        resource = _RESOURCE.get()
        if resource is not None and resource != settings.audience \
                and resource not in client.resources:
            raise InvalidTargetError(f"{client.client_id} may not ask for tokens for "
                                     f"{resource}")
        now = int(self.state.now())
        claims: dict[str, Any] = {
            "iss": settings.issuer, "aud": resource or settings.audience,
            "sub": user.id if user else client.client_id, "client_id": client.client_id,
            "scope": scope, "iat": now, "exp": now + settings.access_ttl_s,
            "jti": uuid.uuid4().hex,
        }
        if client.tier:
            claims["tier"] = client.tier
        key = self.state.keys.signing
        return jwt.encode({"alg": settings.alg, "typ": "at+jwt", "kid": key.kid}, claims,
                          key.key)


class PKCE(CodeChallenge):
    """PKCE for every authorization request, S256 only (OAuth 2.1: `plain` shows the
    verifier to whoever sees the request)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 (authlib's own attribute)
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge (S256)")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]  # noqa: RUF012

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        state: AuthState = self.server.state
        state.codes[code] = AuthCode(
            code, request.client.client_id, request.payload.redirect_uri or "",
            request.scope, request.user.id, data.get("code_challenge"),
            data.get("code_challenge_method"), state.now() + CODE_TTL_S,
            data.get("resource"))

    def query_authorization_code(self, code: str, client: Client) -> AuthCode | None:
        state: AuthState = self.server.state
        found = state.codes.get(code)
        if found is None:
            # A code used twice: RFC 6749 4.1.2 says revoke what the first use gave.
            family = state.used_codes.get(code)
            if family is not None:
                state.revoke_family(family)
            return None
        if found.client_id != client.client_id or found.expires_at <= state.now():
            return None
        _RESOURCE.set(found.resource)
        return found

    def delete_authorization_code(self, authorization_code: AuthCode) -> None:
        state: AuthState = self.server.state
        state.codes.pop(authorization_code.code, None)
        state.used_codes[authorization_code.code] = state.family_of_request()

    def authenticate_user(self, authorization_code: AuthCode) -> User | None:
        state: AuthState = self.server.state
        return state.user(authorization_code.user_id)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]  # noqa: RUF012
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotated on every use

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        state: AuthState = self.server.state
        found = state.refresh_tokens.get(refresh_token)
        if found is None:
            return None
        if found.revoked:
            # Replayed: whoever holds the family's newest token may be the thief.
            state.revoke_family(found.family)
            log.warning("refresh token replayed: family %s of %s revoked", found.family,
                        found.client_id)
            return None
        if found.expires_at <= state.now():
            return None
        _RESOURCE.set(found.resource)
        return found

    def authenticate_user(self, refresh_token: RefreshToken) -> User | None:
        state: AuthState = self.server.state
        return state.user(refresh_token.user_id)

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        refresh_token.revoked = True


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]  # noqa: RUF012


class Payload(OAuth2Payload):
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in pairs:
            self._datalist[key].append(value)
        self._data = {key: values[0] for key, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class StarletteRequest(OAuth2Request):
    """An OAuth2Request over a Starlette request whose body was read already (authlib is
    synchronous; Starlette's body is not)."""

    def __init__(self, request: Request, form: list[tuple[str, str]]) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        query = list(request.query_params.multi_items())
        self._args = dict(query)
        self._form = dict(form)
        self.payload = Payload(query + form)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class Server(AuthorizationServer):
    def __init__(self, state: AuthState) -> None:
        super().__init__(scopes_supported=list(SCOPES))
        self.state = state
        self.register_token_generator("default", TokenGenerator(state))
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(AuthorizationCodeGrant, [PKCE(required=True)])
        self.register_grant(RefreshTokenGrant)

    def query_client(self, client_id: str) -> Client | None:
        return CLIENTS.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        refresh = token.get("refresh_token")
        if not refresh:
            return
        old = request.refresh_token
        family = old.family if old is not None else self.state.family_of_request()
        user = request.user
        self.state.refresh_tokens[refresh] = RefreshToken(
            refresh, request.client.client_id, user.id if user else "", token.get("scope", ""),
            family, self.state.now() + self.state.settings.refresh_ttl_s, _RESOURCE.get())

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        assert isinstance(request, OAuth2Request)  # built by the route, body read
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        hdrs = dict(headers or [])
        if status == 302:
            return RedirectResponse(hdrs.pop("Location"), 302, headers=hdrs)
        return JSONResponse(body, status, headers=hdrs)


@dataclass
class AuthState:
    settings: AuthSettings
    keys: KeyRing
    offset_s: float = 0.0  # PUT /_clock
    codes: dict[str, AuthCode] = field(default_factory=dict)
    used_codes: dict[str, str] = field(default_factory=dict)  # code -> token family
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    _family: ContextVar[str | None] = field(
        default_factory=lambda: ContextVar("family", default=None))
    rotating: asyncio.Task[None] | None = None
    swept_at: float = 0.0

    def now(self) -> float:
        return time.time() + self.offset_s

    def user(self, user_id: str) -> User | None:
        return self.users.get(user_id)

    def family_of_request(self) -> str:
        family = self._family.get()
        if family is None:
            family = uuid.uuid4().hex
            self._family.set(family)
        return family

    def revoke_family(self, family: str) -> None:
        for token in self.refresh_tokens.values():
            if token.family == family:
                token.revoked = True

    def forget_expired(self) -> None:
        now = self.now()
        if now - self.swept_at < 60:
            return  # a sweep is a pass over every token: not on each request
        self.swept_at = now
        self.codes = {k: v for k, v in self.codes.items() if v.expires_at > now}
        self.refresh_tokens = {k: v for k, v in self.refresh_tokens.items()
                               if v.expires_at > now}
        if len(self.used_codes) > 100_000:
            self.used_codes.clear()  # reuse detection is best effort past that

    async def rotate(self, ahead_s: float) -> None:
        # RSA key generation takes tens of milliseconds: off the loop the six services share.
        key = await asyncio.to_thread(new_key, self.settings.alg)
        self.keys.add(key, self.now(), ahead_s)

    def tick(self) -> None:
        """Due rotations, activations and retirements, checked on each request (no timer to
        stop): a rotation starts `ahead_s` before the signing key's time is up."""
        now = self.now()
        self.keys.tick(now)
        signs_from = self.keys.signing.signs_from or 0.0
        due = self.settings.rotation_s > 0 and self.keys.pending is None and \
            now - signs_from >= self.settings.rotation_s - self.settings.ahead_s
        if due and (self.rotating is None or self.rotating.done()):
            self.rotating = asyncio.get_running_loop().create_task(
                self.rotate(self.settings.ahead_s))


def metadata(settings: AuthSettings) -> dict[str, Any]:
    issuer = settings.issuer.rstrip("/")
    data = OpenIDProviderMetadata({
        "issuer": settings.issuer,
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "jwks_uri": f"{issuer}/jwks.json",
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                  "none"],
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["public"],
        # No ID tokens are issued (access tokens only), but discovery requires the field
        # and RS256 in it.
        "id_token_signing_alg_values_supported": list(dict.fromkeys(["RS256", settings.alg])),
    })
    try:
        data.validate()
    except ValueError as err:
        # OpenID Connect wants an https issuer; plain http is fine on loopback, and on a
        # development network (docker compose's http://services:8007) it has to do.
        if not (settings.issuer.startswith("http://") and "https" in str(err)):
            raise
        log.warning("issuer %s is not https: for development only", settings.issuer)
    return dict(data)


LOGIN_FORM = """<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in (development)</title></head>
<body><h1>Sign in to {client}</h1>
<p>Development only: a seed user's id or username, and the development password.</p>
{error}<form method="post" action="/oauth/authorize">
{hidden}<label>User <input name="username" autofocus></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in and allow {scope}</button></form></body></html>
"""


def routes(ctx: Context) -> list[Route]:
    listening = urlsplit(ctx.config.url("auth"))
    # Listening on every address (docker): named by loopback unless AUTH_ISSUER says better.
    own = (f"http://127.0.0.1:{listening.port}" if listening.hostname in ("0.0.0.0", "::")
           else ctx.config.url("auth"))
    settings = AuthSettings.from_env(own)
    state = AuthState(settings, KeyRing(settings.alg, settings.overlap_s))
    state.keys.add(new_key(settings.alg), state.now())
    for user in ctx.dataset.users.values():
        state.users[user["id"]] = User(user["id"], user["username"])
    by_name = {u.username: u for u in state.users.values()}
    server = Server(state)
    discovery = metadata(settings)

    async def form_of(request: Request) -> list[tuple[str, str]]:
        if request.method != "POST":
            return []
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise bad_input("the body must be application/x-www-form-urlencoded")
        try:
            return parse_qsl((await request.body()).decode(), keep_blank_values=True,
                             max_num_fields=50, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise bad_input("the body is not a valid form") from None

    async def configuration(request: Request) -> Response:
        return JSONResponse(discovery)

    async def jwks(request: Request) -> Response:
        state.tick()
        # Short caching: a resource server rereads it for a new key id anyway.
        return JSONResponse(state.keys.jwks(), headers={"Cache-Control": "max-age=300"})

    async def token(request: Request) -> Response:
        state.tick()
        try:
            form = await form_of(request)
        except ApiError as err:  # in OAuth's error format, which clients parse (RFC 6749 5.2)
            return JSONResponse({"error": "invalid_request", "error_description": err.message},
                                400, headers={"Cache-Control": "no-store"})
        oauth_request = StarletteRequest(request, form)
        resource = oauth_request.payload.data.get("resource")
        _RESOURCE.set(resource)
        response: Response = server.create_token_response(oauth_request)
        state.forget_expired()
        return response

    async def authorize(request: Request) -> Response:
        form = await form_of(request)
        oauth_request = StarletteRequest(request, form)
        try:
            grant = server.get_consent_grant(oauth_request)
        except OAuth2Error as error:
            # No valid client or redirect URI: never redirect to an unchecked address.
            if error.redirect_uri:
                return server.handle_error_response(oauth_request, error)
            return HTMLResponse(f"<p>{html.escape(error.error)}: "
                                f"{html.escape(error.description or '')}</p>", 400)
        params = {k: v for k, v in oauth_request.payload.data.items()
                  if k not in ("username", "password")}
        alert = ""  # not `error`: that name is the except clause's, deleted after it
        if request.method == "POST":
            name = oauth_request.form.get("username", "")
            user = state.users.get(name) or by_name.get(name)
            if user is not None and hmac.compare_digest(
                    oauth_request.form.get("password", "").encode(),
                    settings.dev_password.encode()):
                response: Response = server.create_authorization_response(
                    oauth_request, grant_user=user, grant=grant)
                return response
            alert = "<p role=alert>Unknown user or wrong password.</p>"
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" '
                         f'value="{html.escape(v)}">\n' for k, v in params.items())
        page = LOGIN_FORM.format(client=html.escape(grant.client.client_id), error=alert,
                                 hidden=hidden, scope=html.escape(grant.request.scope or ""))
        # The form posts back here: no framing (clickjacking), no caching.
        return HTMLResponse(page, 401 if alert else 200, headers={
            "Cache-Control": "no-store", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; form-action 'self'; "
                                       "frame-ancestors 'none'"})

    async def rotate(request: Request) -> Response:
        raw = await request.body()
        ahead = (await read_object(request)).get("publish_ahead_s", 0) if raw else 0
        if not isinstance(ahead, int | float) or isinstance(ahead, bool) or ahead < 0:
            raise bad_input("publish_ahead_s must be a number of seconds, at least 0")
        await state.rotate(float(ahead))
        return JSONResponse(state.keys.described())

    async def activate(request: Request) -> Response:
        state.keys.activate(state.now())
        return JSONResponse(state.keys.described())

    async def retire(request: Request) -> Response:
        state.keys.retire_now()
        return JSONResponse(state.keys.described())

    async def clock(request: Request) -> Response:
        if request.method == "PUT":
            body = await read_object(request)
            offset = body.get("offset_s")
            if not isinstance(offset, int | float) or isinstance(offset, bool):
                raise bad_input("offset_s must be a number of seconds")
            state.offset_s = float(offset)
        return JSONResponse({"offset_s": state.offset_s, "now": state.now()})

    return [
        Route("/.well-known/openid-configuration", configuration, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", configuration, methods=["GET"]),
        Route("/jwks.json", jwks, methods=["GET"]),
        Route("/oauth/token", token, methods=["POST"]),
        Route("/oauth/authorize", authorize, methods=["GET", "POST"]),
        Route("/_keys/rotate", rotate, methods=["POST"]),
        Route("/_keys/activate", activate, methods=["POST"]),
        Route("/_keys/retire", retire, methods=["POST"]),
        Route("/_clock", clock, methods=["GET", "PUT"]),
    ]
