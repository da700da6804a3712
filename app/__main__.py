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
        description="Print a development bearer token (HS256, signed with AUTH_JWT_SECRET) "
                    "to paste into the IDE's headers: {\"Authorization\": \"Bearer ...\"}.")
    parser.add_argument("--sub", default="u1", help="the user id the token acts as")
    parser.add_argument("--scope", default="read:catalog read:orders write:orders write:reviews",
                        help="space-separated scopes (add admin for everything)")
    parser.add_argument("--tier", default=None, help="gold for the gold rate-limit tier")
    parser.add_argument("--ttl", type=int, default=86_400, help="lifetime in seconds")
    args = parser.parse_args(argv)
    from app.security.auth import development_token

    try:
        settings = Settings.from_env()
        print(development_token(settings, args.sub, args.scope, args.ttl, args.tier))
    except (SettingsError, ValueError) as err:
        print(f"token: {err}", file=sys.stderr)
        return 2
    return 0


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
