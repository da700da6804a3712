"""`python -m app`: run the gateway with uvicorn on the configured address.

`python -m app trace QUERY_FILE`: run a query against a running gateway and print its
waterfall (app/telemetry/waterfall.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import orjson
import uvicorn

from app.cache.hints import CacheHints
from app.config.settings import Settings, SettingsError
from app.core.process import die_with_parent
from app.security.persisted import load_manifest
from app.telemetry import logs
from app.telemetry.metrics import MULTIPROC_ENV
from schema import build_schema


def serve() -> int:
    try:
        settings = Settings.from_env()
        # Cache-hint overrides name schema coordinates: check them against the schema now,
        # with a clear message, rather than fail inside the server's start-up.
        CacheHints(build_schema().as_str(), settings.cache_hints)
        if settings.persisted_queries_file:
            load_manifest(settings.persisted_queries_file)  # a bad manifest: say so now
    except SettingsError as err:
        print(f"gateway: bad setting: {err}", file=sys.stderr)
        return 2
    worker = os.environ.get(WORKER_ENV) == "1"  # one of several, started by `supervise`
    if settings.workers > 1 and not settings.redis_url and not worker:
        print("gateway: several workers without REDIS_URL: each has its own cache, rate "
              "limits and persisted queries, and a change event reaches only one of them",
              file=sys.stderr)
    own_metrics_dir = None
    if settings.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # Each worker writes its metrics here and /metrics sums them; set before any worker
        # imports prometheus_client, which reads it then.
        own_metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ[MULTIPROC_ENV] = own_metrics_dir
    endpoint = f"http://{settings.host}:{settings.port}/graphql"
    if not worker:
        print(f"gateway: GraphQL IDE at {endpoint}" if settings.graphql_ide
              else f"gateway: GraphQL at {endpoint} (the IDE is off: GRAPHQL_IDE)", flush=True)
    try:
        if settings.workers > 1 and not worker:
            return supervise(settings.workers)
        config = uvicorn.Config(
            "app.http.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http="httptools",
            log_config=logs.logging_config(settings),
            log_level=settings.log_level,
            access_log=False,  # app/telemetry/requests.py writes the access log
        )
        server = uvicorn.Server(config)
        sockets = None
        if worker:
            try:
                sockets = [reuse_port_socket(settings.host, settings.port, config.backlog)]
            except OSError as err:
                print(f"gateway: cannot listen on {settings.host}:{settings.port}: {err}",
                      file=sys.stderr)
                return STARTUP_FAILURE
        try:
            server.run(sockets=sockets)
        except KeyboardInterrupt:
            pass
        return 0 if server.started else STARTUP_FAILURE
    finally:
        if own_metrics_dir is not None:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


# -- several workers ---------------------------------------------------------------------------
# uvicorn's workers share one listening socket, and whichever is awake accepts every pending
# connection: 32 keep-alive connections opened at once all went to one worker
# (bench/README.md, scale-out). Here each worker binds its own socket with SO_REUSEPORT, and
# the kernel spreads new connections over them.
WORKER_ENV = "GATEWAY_WORKER"
STARTUP_FAILURE = 3
RESTART_AFTER_S = 1.0
CANNOT_START = (2, STARTUP_FAILURE)  # a bad setting, or the server did not start: no retry


def reuse_port_socket(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def supervise(workers: int) -> int:
    """Run `workers` gateway processes on the port; restart one that ends (a crash, a kill),
    stop them all on SIGTERM or SIGINT. Returns a worker's exit code if one could not start
    (restarting it would fail the same way)."""
    env = {**os.environ, WORKER_ENV: "1"}

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "app"], env=env,
                                preexec_fn=die_with_parent)

    running = [spawn() for _ in range(workers)]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed = 0
    while not stopping:
        for i, proc in enumerate(running):
            code = proc.poll()
            if code is None or stopping:
                continue
            if code in CANNOT_START:
                print(f"gateway: a worker could not start (exit {code})", file=sys.stderr)
                failed, stopping = code, True
                break
            print(f"gateway: worker {proc.pid} ended (exit {code}); starting another",
                  file=sys.stderr, flush=True)
            time.sleep(RESTART_AFTER_S)
            running[i] = spawn()
        time.sleep(0.2)
    for proc in running:
        if proc.poll() is None:
            proc.terminate()
    for proc in running:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return failed


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
