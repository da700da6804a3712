"""`python -m app`: run the gateway (app/http/server.py).

`python -m app trace QUERY_FILE`: run a query against a running gateway and print its
waterfall (app/telemetry/waterfall.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

import orjson

from app.config.settings import Settings, SettingsError
from app.http.server import serve


def trace(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app trace",
        description="Run a query against a running gateway and print its waterfall: each "
                    "resolver's start, duration, upstream calls, retries and errors, with "
                    "the slowest path marked.")
    parser.add_argument("query_file", help="a file holding the GraphQL document")
    parser.add_argument("--url", default="http://127.0.0.1:8000/graphql")
    parser.add_argument("--variables", default="{}", help="variables, as JSON")
    parser.add_argument("--operation", default=None, help="the operation to run")
    parser.add_argument("--debug-token", default=os.environ.get("DEBUG_TOKEN", "1"),
                        help="the gateway's DEBUG_TOKEN (any value in development mode)")
    parser.add_argument("-H", "--header", action="append", default=[],
                        help="an extra header, 'Name: value' (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the raw response")
    args = parser.parse_args(argv)
    from app.telemetry.waterfall import render

    try:
        with open(args.query_file, encoding="utf-8") as f:
            query = f.read()
        variables = orjson.loads(args.variables)
    except (OSError, orjson.JSONDecodeError) as err:
        print(f"trace: {err}", file=sys.stderr)
        return 2
    headers = {"Content-Type": "application/json", "X-Gateway-Debug": args.debug_token}
    for header in args.header:
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    body = orjson.dumps({"query": query, "variables": variables,
                         "operationName": args.operation})
    request = urllib.request.Request(args.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        try:
            payload = orjson.loads(err.read() or b"{}")
        except orjson.JSONDecodeError:
            print(f"trace: {args.url} answered {err.code}, not GraphQL", file=sys.stderr)
            return 1
    except (urllib.error.URLError, OSError) as err:
        print(f"trace: cannot reach {args.url}: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
        return 0
    if "debug" not in (payload.get("extensions") or {}):
        print("trace: the gateway sent no waterfall: it needs DEV_MODE, or --debug-token "
              "equal to its DEBUG_TOKEN", file=sys.stderr)
        for error in payload.get("errors") or []:
            print(f"error: {error.get('message')}", file=sys.stderr)
        return 1
    width = shutil.get_terminal_size((120, 40)).columns
    print(render(payload, width=width, color=sys.stdout.isatty()))
    return 0


def token(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app token",
        description="Print a bearer token to paste into the IDE's headers: "
                    "{\"Authorization\": \"Bearer ...\"}. With --client, an access token "
                    "from the authorization server of AUTH_ISSUER (OpenID Connect discovery, "
                    "then the client credentials grant: make token). Without, a token "
                    "signed with AUTH_JWT_SECRET (HS256: the tests' development tokens).")
    parser.add_argument("--client", default=None, help="an API client's id (make token)")
    parser.add_argument("--client-secret", default=os.environ.get("CLIENT_SECRET", ""),
                        help="its secret (default: CLIENT_SECRET)")
    parser.add_argument("--issuer", default=None, help="the authorization server (default: "
                        "AUTH_ISSUER)")
    parser.add_argument("--user", default=None,
                        help="a seed user's id or username: sign in as them through the "
                             "authorization code flow with PKCE (the storefront app)")
    parser.add_argument("--password", default="password", help="with --user (development)")
    parser.add_argument("--sub", default="u1", help="HS256: the user id the token acts as")
    parser.add_argument("--scope", default=None,
                        help="space-separated scopes (with --client, none: all the client "
                             "may have)")
    parser.add_argument("--tier", default=None, help="HS256: a rate-limit tier, such as gold")
    parser.add_argument("--ttl", type=int, default=86_400, help="HS256: lifetime in seconds")
    args = parser.parse_args(argv)
    from app.security.auth import development_token

    try:
        settings = Settings.from_env()
        if args.client:
            print(client_credentials_token(args.issuer or settings.auth_issuer, args.client,
                                           args.client_secret, args.scope or ""))
        elif args.user:
            print(user_token(args.issuer or settings.auth_issuer, args.user, args.password,
                             args.scope or ""))
        else:
            scope = args.scope if args.scope is not None else \
                "read:catalog read:orders write:orders write:reviews"
            print(development_token(settings, args.sub, scope, args.ttl, args.tier))
    except (SettingsError, ValueError) as err:
        print(f"token: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"token: {err}", file=sys.stderr)
        return 1
    return 0


def discover(issuer: str) -> dict[str, str]:
    """The authorization server's OpenID Connect discovery document."""
    if not issuer:
        raise ValueError("no authorization server: set AUTH_ISSUER or give --issuer")
    discovery = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(discovery, timeout=10) as response:
            described = orjson.loads(response.read())
            return {k: described[k] for k in ("token_endpoint", "authorization_endpoint")}
    except (urllib.error.URLError, KeyError, TypeError, orjson.JSONDecodeError) as err:
        raise OSError(f"cannot read {discovery} ({err}): is the authorization server "
                      "running (make run, or make services)?") from None


def client_credentials_token(issuer: str, client: str, secret: str, scope: str) -> str:
    """An access token by the client credentials grant, from the token endpoint that the
    issuer's OpenID Connect discovery names (RFC 6749 4.4, client_secret_basic)."""
    import base64
    import urllib.parse

    endpoint = discover(issuer)["token_endpoint"]
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    basic = base64.b64encode(f"{urllib.parse.quote(client, safe='')}:"
                             f"{urllib.parse.quote(secret, safe='')}".encode()).decode()
    return _token_request(endpoint, form, {"Authorization": f"Basic {basic}"})["access_token"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the redirect carries the code: read it, do not follow it


def user_token(issuer: str, user: str, password: str, scope: str) -> str:
    """A seed user's access token, as the storefront app gets it: the authorization code
    grant with PKCE, the reference server's development login filled in for the user."""
    import base64
    import hashlib
    import secrets
    import urllib.parse

    endpoints = discover(issuer)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    redirect_uri, state = "http://127.0.0.1/callback", secrets.token_urlsafe(16)
    params = {"response_type": "code", "client_id": "storefront", "redirect_uri": redirect_uri,
              "state": state, "code_challenge": challenge.rstrip(b"=").decode(),
              "code_challenge_method": "S256", **({"scope": scope} if scope else {}),
              "username": user, "password": password}
    request = urllib.request.Request(
        endpoints["authorization_endpoint"], data=urllib.parse.urlencode(params).encode(),
        method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        urllib.request.build_opener(_NoRedirect).open(request, timeout=10)
        raise ValueError("the authorization server answered without a redirect")
    except urllib.error.HTTPError as err:
        if err.code != 302:
            raise ValueError(f"sign-in refused (status {err.code}): unknown user or wrong "
                             "password") from None
        answer = urllib.parse.parse_qs(urllib.parse.urlsplit(err.headers["Location"]).query)
    if answer.get("state") != [state] or "code" not in answer:
        raise ValueError(f"the authorization server refused: {answer.get('error')}")
    return _token_request(endpoints["token_endpoint"], {
        "grant_type": "authorization_code", "code": answer["code"][0],
        "redirect_uri": redirect_uri, "client_id": "storefront", "code_verifier": verifier,
    }, {})["access_token"]


def _token_request(endpoint: str, form: dict[str, str], headers: dict[str, str]
                   ) -> dict[str, str]:
    import urllib.parse

    request = urllib.request.Request(
        endpoint, data=urllib.parse.urlencode(form).encode(), method="POST",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(orjson.loads(response.read()))
    except urllib.error.HTTPError as err:
        try:
            body = orjson.loads(err.read())
            reason = f"{body.get('error')}: {body.get('error_description', '')}"
        except (orjson.JSONDecodeError, AttributeError):
            reason = f"status {err.code}"
        raise ValueError(f"the authorization server refused: {reason}") from None
    except urllib.error.URLError as err:
        raise OSError(f"cannot reach {endpoint}: {err}") from None


def write_schema(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app schema",
        description="Write the served schema's SDL to schema/schema.graphql (make schema).")
    parser.add_argument("--check", action="store_true",
                        help="only say whether the file is current (exit 1 when stale)")
    args = parser.parse_args(argv)
    from schema import SDL_FILE, printed_sdl

    sdl = printed_sdl()
    current = SDL_FILE.exists() and SDL_FILE.read_text() == sdl
    if args.check:
        print(f"schema: {SDL_FILE} is {'current' if current else 'stale: run make schema'}")
        return 0 if current else 1
    if not current:
        from schema.evolution import CHANGELOG, read_changelog, unlisted

        if SDL_FILE.exists():
            # A change that breaks (or endangers) the committed schema's clients is written
            # only once the changelog lists it with a reason.
            missing = unlisted(SDL_FILE.read_text(), sdl, read_changelog())
            if missing:
                print(f"schema: not written: {CHANGELOG.name} does not list these changes "
                      "(add each with its reason and date):")
                for change in missing:
                    print(f"  {change.kind}: {change.description}")
                return 1
        SDL_FILE.write_text(sdl)
    print(f"schema: {SDL_FILE} {'unchanged' if current else 'written'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["trace"]:
        return trace(argv[1:])
    if argv[:1] == ["token"]:
        return token(argv[1:])
    if argv[:1] == ["schema"]:
        return write_schema(argv[1:])
    return serve()


if __name__ == "__main__":
    sys.exit(main())
