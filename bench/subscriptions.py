"""Subscriptions under load, over graphql-transport-ws and over SSE (issue 18, point 5).

The gateway runs alone on core 0 (`taskset`, one worker); the reference services, the
subscribing clients (processes of their own: `python -m bench.subscriptions client`) and the
writes that make the events share core 1. Every event is a real write at the inventory
(`POST /inventory/{sku}/restock`), whose signed change event the services deliver to the
gateway's `/events`; every subscriber holds `stockChanged` on the same product, so one
event fans out to all of them. For each protocol:

- fan-out throughput (WebSocket clients with permessage-deflate, as browsers and the `ws`
  package offer it, and without): restocks at `--flood-rate` per second (more events than
  the fan-outs keep up with) for `--seconds` after a one-second warm-up; messages received
  per second by the clients, and the gateway's CPU time (`/proc/PID/stat`, read before and
  after) per delivered message. Events that come faster than a fan-out coalesce to the
  entity's latest (app/execution/subscriptions.py): the gateway stays busy without an
  unbounded queue;
- delivery latency: `--events` restocks paced at `--rate` per second; for each message,
  the time from the moment the restock was sent (before the service's event exists: an
  upper bound) to the moment the client read it, same machine clock. p50 and p99;
- memory per idle subscription: a fresh gateway, 20 subscriptions to warm its paths, RSS
  (`VmRSS`), then `--idle` more idle subscriptions, RSS again: the delta per subscription,
  with one subscription per connection (WebSocket with permessage-deflate, as browsers and
  the `ws` package offer it, and without) and (WebSocket only: SSE carries one per stream)
  100 per connection;
- a burst (`--burst`, WebSocket, one subscription per connection): that many clients connect
  and subscribe at once; the time until all are active, and the gateway's CPU per
  subscription.

Writes the Subscriptions section of bench/RESULTS.md and bench/subscriptions.json.

    python -m bench.subscriptions [--subscribers 1000] [--seconds 5] [--events 40]
        [--rate 5] [--idle 1000] [--burst 5000] [--protocols ws,sse] [--out bench]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.loadgen import percentile
from bench.report import replace_section
from tests.harness import (
    ROOT,
    Gateway,
    Services,
    free_port,
    http,
    pinned,
    sample_total,
    start_gateway,
    start_services,
)

BENCH = Path(__file__).resolve().parent
PRODUCT = "p7"
QUERY = "subscription S($id: ID!) { stockChanged(productId: $id) { quantity } }"
PER_CONNECTION = 100  # graphql-transport-ws subscriptions per connection (the default cap)
CLIENT_PROCESSES = 2
GATEWAY_ENV = {
    "LOG_LEVEL": "warning",
    # Every client here is one anonymous address: the per-client cap is not what is measured.
    "SUBSCRIPTION_CONNECTIONS_PER_CLIENT": "1000000",
    "SUBSCRIPTION_INIT_TIMEOUT_S": "60",
}
TICKS = os.sysconf("SC_CLK_TCK")


# -- the gateway process, from /proc ---------------------------------------------------------------
def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    problem = ""
    for _ in range(100):  # a 503 (MAX_CONNECTIONS), or slow, in a burst: again
        try:
            status, _, text = http("GET", gateway.url + "/metrics")
        except OSError as error:  # (a timeout)
            problem = repr(error)
            continue
        if status == 200:
            return sample_total(text, name, **labels)
        problem = f"status {status}: {text}"
        time.sleep(0.1)
    raise RuntimeError(f"/metrics failed: {problem}")


def active(gateway: Gateway) -> int:
    return int(metric(gateway, "gateway_subscriptions_active"))


def wait_active(gateway: Gateway, count: int, clients: list[Client], timeout: float = 120
                ) -> float:
    """Until `gateway` holds `count` subscriptions; the seconds it took."""
    started = time.monotonic()
    while (now := active(gateway)) < count:
        for client in clients:
            if client.proc.poll() is not None:
                raise RuntimeError("a client ended: " + client.errors())
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{now} of {count} subscriptions active")
        time.sleep(0.05)
    return time.monotonic() - started


# -- clients: processes of their own -----------------------------------------------------------
@dataclass
class Client:
    proc: subprocess.Popen[bytes]
    out: Path

    def stop(self) -> dict[str, Any]:
        """Stop it; what it received: [time, quantity] per message, and its failures."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait(60)
        if not self.out.exists():
            raise RuntimeError("a client wrote nothing: " + self.errors())
        return dict(orjson.loads(self.out.read_bytes()))

    def errors(self) -> str:
        return self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ""


def start_clients(tmp: Path, url: str, protocol: str, connections: int, per_connection: int,
                  processes: int = CLIENT_PROCESSES, deflate: bool = True) -> list[Client]:
    clients = []
    for i in range(processes):
        share = connections // processes + (1 if i < connections % processes else 0)
        if not share:
            continue
        out = tmp / f"client-{protocol}-{time.monotonic_ns()}-{i}.json"
        spec = {"url": url, "protocol": protocol, "connections": share,
                "per_connection": per_connection, "out": str(out), "deflate": deflate}
        proc = subprocess.Popen(
            [*pinned("1"), sys.executable, "-m", "bench.subscriptions", "client",
             orjson.dumps(spec).decode()],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        clients.append(Client(proc, out))
    # Every process is up (Python started, modules imported): now they connect, together.
    for client in clients:
        assert client.proc.stdout is not None
        if client.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("a client did not start: " + client.errors())
    for client in clients:
        assert client.proc.stdin is not None
        client.proc.stdin.write(b"go\n")
        client.proc.stdin.flush()
    return clients


async def client_main(spec: dict[str, Any]) -> None:
    """A client process: its connections and subscriptions, then every message's time and
    quantity until "stop" on stdin."""
    received: list[tuple[float, int]] = []
    failures: list[str] = []
    url = spec["url"]
    variables = {"id": PRODUCT}

    def record(payload: Any, raw: str | bytes) -> None:
        data = (payload.get("data") or {}).get("stockChanged") if isinstance(payload, dict) \
            else None
        if data is None or payload.get("errors"):
            failures.append(str(raw)[:200])
        else:
            received.append((time.time(), data["quantity"]))

    async def websocket() -> None:
        import websockets
        try:
            async with websockets.connect(
                    url.replace("http://", "ws://") + "/graphql",
                    subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                    ping_interval=None, open_timeout=120, max_queue=None,
                    # permessage-deflate, as browsers and the `ws` package offer it, or not.
                    compression="deflate" if spec["deflate"] else None) as ws:
                await ws.send(orjson.dumps({"type": "connection_init", "payload": {}}).decode())
                ack = orjson.loads(await ws.recv())
                if ack.get("type") != "connection_ack":
                    failures.append(f"no ack: {ack}")
                    return
                for n in range(spec["per_connection"]):
                    await ws.send(orjson.dumps({"type": "subscribe", "id": str(n), "payload": {
                        "query": QUERY, "variables": variables}}).decode())
                async for raw in ws:
                    message = orjson.loads(raw)
                    if message.get("type") == "next":
                        record(message.get("payload"), raw)
                    elif message.get("type") == "ping":
                        await ws.send('{"type":"pong"}')
                    else:
                        failures.append(str(raw)[:200])
        except Exception as error:  # counted: the run says how many failed
            failures.append(repr(error)[:200])

    async def event_stream(session: aiohttp.ClientSession) -> None:
        try:
            async with session.post(url + "/graphql", json={
                    "query": QUERY, "variables": variables},
                    headers={"Accept": "text/event-stream"}) as resp:
                if resp.status != 200:
                    failures.append(f"status {resp.status}")
                    return
                pending = b""
                async for chunk in resp.content.iter_any():
                    pending += chunk
                    *events, pending = pending.split(b"\n\n")
                    for event in events:
                        for line in event.split(b"\n"):
                            if line.startswith(b"data: "):
                                record(orjson.loads(line[6:]), line)
        except Exception as error:
            failures.append(repr(error)[:200])

    tasks: list[asyncio.Task[None]] = []
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=120)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as session:
        for _ in range(spec["connections"]):
            tasks.append(asyncio.create_task(
                websocket() if spec["protocol"] == "ws" else event_stream(session)))
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    Path(spec["out"]).write_bytes(orjson.dumps({"messages": received, "failures": failures}))


# -- the writes that make events ---------------------------------------------------------------
class Writer:
    def __init__(self, services: Services, sku: str) -> None:
        self.url = services.url("inventory") + f"/inventory/{sku}/restock"
        self.sent: dict[int, float] = {}  # quantity after the restock -> when it was sent

    async def restock(self, session: aiohttp.ClientSession) -> None:
        sent = time.time()
        async with session.post(self.url, json={"quantity": 1}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        self.sent[int(body["quantity"])] = sent

    async def flood(self, seconds: float, rate: float) -> int:
        """Restocks at `rate` per second for `seconds` (one in flight at most per slot:
        late ones are skipped, not bunched); how many."""
        count = 0
        async with aiohttp.ClientSession() as session:
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                await self.restock(session)
                count += 1
                await asyncio.sleep(max(0.0, start + count / rate - time.monotonic()))
        return count

    async def paced(self, events: int, rate: float) -> dict[int, float]:
        """`events` restocks, one every 1/rate s; their quantities and send times."""
        self.sent = {}
        async with aiohttp.ClientSession() as session:
            start = time.monotonic()
            for n in range(events):
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                await self.restock(session)
        return dict(self.sent)


# -- the measures ------------------------------------------------------------------------------
@dataclass
class Stack:
    tmp: Path
    services: Services
    gateway: Gateway
    sku: str

    def stop(self) -> None:
        self.gateway.stop()
        self.services.stop()


def start_stack(tmp: Path, env: dict[str, str] | None = None) -> Stack:
    port = free_port()
    services = start_services(tmp, webhooks=[f"http://127.0.0.1:{port}/events"], cpus="1")
    try:
        gateway = start_gateway(tmp, services, port=port, env={**GATEWAY_ENV, **(env or {})},
                                cpus="0")
    except Exception:
        services.stop()
        raise
    _, _, body = http("POST", gateway.url + "/graphql", {
        "query": "query($id: ID!) { product(id: $id) { sku } }", "variables": {"id": PRODUCT}})
    return Stack(tmp, services, gateway, body["data"]["product"]["sku"])


def fan_out(tmp: Path, protocol: str, subscribers: int, seconds: float, flood: float,
            events: int, rate: float, deflate: bool = True) -> dict[str, Any]:
    """Throughput, then paced latency, with the same subscribers."""
    stack = start_stack(tmp)
    pid = stack.gateway.process.proc.pid
    per = min(PER_CONNECTION, subscribers) if protocol == "ws" else 1
    connections = -(-subscribers // per)
    clients = start_clients(tmp, stack.gateway.url, protocol, connections, per,
                            deflate=deflate)
    try:
        wait_active(stack.gateway, connections * per, clients)
        writer = Writer(stack.services, stack.sku)
        asyncio.run(writer.flood(1.0, flood))  # warm-up
        time.sleep(0.5)
        fanned = metric(stack.gateway, "gateway_subscription_events_total",
                              outcome="fanned_out")
        coalesced = metric(stack.gateway, "gateway_subscription_events_total",
                                 outcome="coalesced")
        t0, c0 = time.time(), cpu_s(pid)
        writes = asyncio.run(writer.flood(seconds, flood))
        t1, c1 = time.time(), cpu_s(pid)
        time.sleep(1.0)  # what is in flight arrives (counted only within [t0, t1])
        fanned = metric(stack.gateway, "gateway_subscription_events_total",
                              outcome="fanned_out") - fanned
        coalesced = metric(stack.gateway, "gateway_subscription_events_total",
                                 outcome="coalesced") - coalesced
        paced = asyncio.run(writer.paced(events, rate))
        time.sleep(2.0)
        results = [client.stop() for client in clients]
    finally:
        for client in clients:
            if client.proc.poll() is None:
                client.proc.kill()
        stack.stop()
    times = [t for r in results for t, _ in r["messages"]]
    delivered = sum(1 for t in times if t0 <= t <= t1)
    latencies = sorted((t - paced[q]) * 1000 for r in results for t, q in r["messages"]
                       if q in paced)
    expected = len(paced) * connections * per
    failures = [f for r in results for f in r["failures"]]
    return {
        "protocol": protocol, "deflate": deflate and protocol == "ws",
        "subscribers": connections * per, "connections": connections,
        "seconds": t1 - t0, "writes": writes, "flood_rate": flood, "events_fanned_out": fanned,
        "events_coalesced": coalesced,
        "messages_per_s": delivered / (t1 - t0), "cpu_share": (c1 - c0) / (t1 - t0),
        "cpu_us_per_message": (c1 - c0) * 1e6 / delivered if delivered else 0.0,
        "paced_events": len(paced), "paced_rate": rate,
        "paced_messages": len(latencies), "paced_expected": expected,
        "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else 0.0,
        "failures": len(failures), "failure_sample": failures[:3],
    }


def idle_memory(tmp: Path, protocol: str, subscriptions: int, per_connection: int,
                deflate: bool = True) -> dict[str, Any]:
    """RSS per idle subscription: the delta over `subscriptions`, after a warm-up."""
    stack = start_stack(tmp)
    pid = stack.gateway.process.proc.pid
    per_warm = min(per_connection, 20)
    warm = start_clients(tmp, stack.gateway.url, protocol, 20 // per_warm, per_warm,
                         processes=1)
    clients: list[Client] = []
    try:
        wait_active(stack.gateway, 20, warm)
        time.sleep(1.0)
        before = rss_kb(pid)
        connections = -(-subscriptions // per_connection)
        clients = start_clients(tmp, stack.gateway.url, protocol, connections, per_connection,
                                deflate=deflate)
        wait_active(stack.gateway, 20 + connections * per_connection, clients)
        time.sleep(1.0)
        after = rss_kb(pid)
        results = [client.stop() for client in [*warm, *clients]]
    finally:
        for client in [*warm, *clients]:
            if client.proc.poll() is None:
                client.proc.kill()
        stack.stop()
    count = connections * per_connection
    return {"protocol": protocol, "per_connection": per_connection, "subscriptions": count,
            "deflate": deflate and protocol == "ws",
            "rss_before_kb": before, "rss_after_kb": after,
            "kb_per_subscription": (after - before) / count,
            "failures": sum(len(r["failures"]) for r in results)}


def burst(tmp: Path, clients_count: int) -> dict[str, Any]:
    """`clients_count` WebSocket clients connect and subscribe at once (one subscription
    each): the time until all are active, the gateway's CPU per subscription."""
    stack = start_stack(tmp)
    pid = stack.gateway.process.proc.pid
    c0 = cpu_s(pid)
    clients = start_clients(tmp, stack.gateway.url, "ws", clients_count, 1, processes=4)
    started = time.monotonic()  # (the clients connect from now on)
    try:
        wait_active(stack.gateway, clients_count, clients, timeout=300)
        took = time.monotonic() - started
        c1 = cpu_s(pid)
        results = [client.stop() for client in clients]
    finally:
        for client in clients:
            if client.proc.poll() is None:
                client.proc.kill()
        stack.stop()
    return {"clients": clients_count, "seconds_to_all_active": took,
            "cpu_s": c1 - c0, "cpu_ms_per_subscription": (c1 - c0) * 1000 / clients_count,
            "failures": sum(len(r["failures"]) for r in results)}


# -- report ------------------------------------------------------------------------------------
def report(out: Path, command: str, result: dict[str, Any]) -> str:
    names = {"ws": "graphql-transport-ws", "sse": "SSE"}
    lines = [
        f"`{command}` ({result['date']}): the gateway alone on core 0, one worker; the "
        "services, the client processes and the writes on core 1. Every subscriber holds "
        f"`stockChanged` on one product; each event is a restock at the inventory, delivered "
        "signed to `/events` (bench/subscriptions.py says how each figure is taken).", "",
        "| protocol | subscribers (connections) | messages/s | gateway CPU | CPU per message "
        "| per full core | events fanned out / coalesced | paced p50 | paced p99 "
        "| paced messages |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    def name(r: dict[str, Any]) -> str:
        return names[r["protocol"]] + (
            "" if r["protocol"] != "ws" else ", permessage-deflate" if r["deflate"]
            else ", no compression")

    for r in result["fan_out"]:
        lines.append(
            f"| {name(r)} | {r['subscribers']:,} ({r['connections']:,}) | "
            f"{r['messages_per_s']:,.0f} | {100 * r['cpu_share']:.0f}% | "
            f"{r['cpu_us_per_message']:.0f} µs | "
            f"{1e6 / r['cpu_us_per_message'] if r['cpu_us_per_message'] else 0:,.0f} msg/s | "
            f"{r['events_fanned_out']:.0f} / "
            f"{r['events_coalesced']:.0f} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | "
            f"{r['paced_messages']:,} of {r['paced_expected']:,} |")
    lines += ["", "Memory per idle subscription (RSS delta, after 20 warm-up subscriptions):",
              "", "| protocol | subscriptions per connection | subscriptions | per subscription |",
              "|---|---|---|---|"]
    for r in result["idle"]:
        lines.append(f"| {name(r)} | {r['per_connection']} | "
                     f"{r['subscriptions']:,} | {r['kb_per_subscription']:.1f} kB |")
    if result.get("burst"):
        b = result["burst"]
        lines += ["", f"Burst: {b['clients']:,} WebSocket clients connecting and subscribing "
                  f"at once were all active after {b['seconds_to_all_active']:.1f} s; the "
                  f"gateway spent {b['cpu_ms_per_subscription']:.2f} ms of CPU per "
                  f"subscription ({b['cpu_s']:.1f} s), {b['failures']} failed."]
    failures = sum(r["failures"] for r in [*result["fan_out"], *result["idle"]])
    lines += ["", f"Failed connections or messages: {failures}.", "",
              "Reading it: the clients share core 1 with the services (and, on this machine, "
              "other work), so the gateway's CPU share stays below one core and `messages/s` "
              "is what the clients kept up with; `CPU per message` is the gateway's own cost "
              "and `per full core` (1 s over it) what one core would fan out. Events come "
              "faster than fan-outs end: an entity's waiting events coalesce to its latest, "
              "and every subscriber still gets the latest state. The paced latency runs "
              "from the moment the restock was sent (before its event exists) to the "
              "client's read, the clients' own queueing on their busy core included; a paced "
              "event that came while the previous one's fan-out still ran can coalesce "
              "(`paced messages` below the expected)."]
    body = "\n".join(lines)
    replace_section(out / "RESULTS.md", "Subscriptions", body)
    return body


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
        asyncio.run(client_main(orjson.loads(argv[1])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.subscriptions")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--flood-rate", type=float, default=50.0,
                        help="events per second while measuring throughput: more than the "
                        "fan-outs keep up with (the surplus coalesces)")
    parser.add_argument("--events", type=int, default=40, help="paced events")
    parser.add_argument("--rate", type=float, default=5.0, help="paced events per second")
    parser.add_argument("--idle", type=int, default=1000, help="idle subscriptions")
    parser.add_argument("--burst", type=int, default=5000,
                        help="clients subscribing at once (0: skip)")
    parser.add_argument("--protocols", default="ws,sse")
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.subscriptions " + " ".join(argv) if argv else \
        "make bench-subscriptions"
    tmp = Path(tempfile.mkdtemp(prefix="bench-sub-"))
    protocols = args.protocols.split(",")
    try:
        result: dict[str, Any] = {
            "command": command, "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "fan_out": [fan_out(tmp, p, args.subscribers, args.seconds, args.flood_rate,
                                args.events, args.rate, deflate)
                        for p in protocols
                        for deflate in ((True, False) if p == "ws" else (False,))],
            "idle": [idle_memory(tmp, p, args.idle, per, deflate)
                     for p in protocols for per, deflate in (
                         ((1, True), (1, False), (PER_CONNECTION, True)) if p == "ws"
                         else ((1, False),))],
            "burst": burst(tmp, args.burst) if args.burst else None,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (args.out / "subscriptions.json").write_bytes(orjson.dumps(result,
                                                               option=orjson.OPT_INDENT_2))
    print(report(args.out, command, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
