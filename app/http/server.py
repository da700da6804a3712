"""The gateway's process: uvicorn on the configured address, and with GATEWAY_WORKERS > 1 a
small supervisor of worker processes, each with its own SO_REUSEPORT socket (the kernel
spreads connections over them; one shared socket let one awake worker take whole bursts)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import uvicorn

from app.cache.hints import CacheHints
from app.config.settings import Settings, SettingsError
from app.core.process import die_with_parent
from app.http.connections import GuardedHttpToolsProtocol
from app.security.persisted import load_manifest
from app.telemetry import logs
from app.telemetry.metrics import MULTIPROC_ENV, WORKER_RESTARTS, worker_ended
from schema import build_schema


def serve() -> int:
    try:
        settings = Settings.from_env()
        # Cache-hint overrides name schema coordinates: check them against the schema now,
        # with a clear message, rather than fail inside the server's start-up.
        CacheHints(build_schema().as_str(), settings.cache_hints)
        if settings.persisted_queries_file:
            load_manifest(settings.persisted_queries_file)  # a bad manifest: say so now
        settings.check_deployable()  # no published secret outside development mode
    except SettingsError as err:
        print(f"gateway: bad setting: {err}", file=sys.stderr)
        return 2
    worker = os.environ.get(WORKER_ENV) == "1"  # one of several, started by `supervise`
    if worker and os.environ.get(RESTARTED_ENV) == "1":
        WORKER_RESTARTS.inc()  # the one that ended cannot say so: its successor does
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
            # httptools with the limits uvicorn lacks: header and body timeouts, the header
            # size (app/http/connections.py).
            http=GuardedHttpToolsProtocol.configure(
                settings.header_timeout_s, settings.body_timeout_s, settings.max_header_bytes),
            limit_concurrency=settings.max_connections,
            timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
            # X-Forwarded-For and -Proto only from TRUSTED_PROXIES (uvicorn's default trusts
            # loopback, and its FORWARDED_ALLOW_IPS variable, which is not read here).
            proxy_headers=bool(settings.proxies()),
            forwarded_allow_ips=settings.proxies(),
            server_header=False,
            log_config=logs.logging_config(settings),
            log_level=settings.log_level,
            access_log=False,  # app/telemetry/requests.py writes the access log
        )
        raise_fd_limit()
        server = GatewayServer(config)
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


class GatewayServer(uvicorn.Server):
    """uvicorn's server, whose shutdown (SIGTERM, SIGINT) first stops accepting connections,
    then ends every subscription connection the way its client library retries
    (`app.http.subscriptions.Streams.shutdown`), and only then does uvicorn's own: it would
    close WebSockets without a word and wait forever for event streams to end."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        streams = getattr(getattr(_starlette(self.config.loaded_app), "state", None),
                          "streams", None)
        if streams is not None:
            await streams.shutdown()
        await super().shutdown(sockets)


def _starlette(app: Any) -> Any:
    """The Starlette application inside uvicorn's wrappers (proxy headers, logging)."""
    while app is not None and not hasattr(app, "state"):
        app = getattr(app, "app", None)
    return app


def raise_fd_limit() -> None:
    """The soft limit on open files up to the hard one: MAX_CONNECTIONS, the upstream pools
    and Redis all take descriptors, and a soft limit of 1024 is common."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # as it was


# -- several workers ---------------------------------------------------------------------------
# uvicorn's workers share one listening socket, and whichever is awake accepts every pending
# connection: 32 keep-alive connections opened at once all went to one worker
# (bench/README.md, scale-out). Here each worker binds its own socket with SO_REUSEPORT, and
# the kernel spreads new connections over them.
WORKER_ENV = "GATEWAY_WORKER"
RESTARTED_ENV = "GATEWAY_WORKER_RESTARTED"  # set for a worker started in place of one
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

    def spawn(restarted: bool = False) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "app"],
                                env={**env, RESTARTED_ENV: "1"} if restarted else env,
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
            worker_ended(proc.pid)
            time.sleep(RESTART_AFTER_S)
            running[i] = spawn(restarted=True)
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
