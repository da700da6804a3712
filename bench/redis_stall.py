"""What a stalled Redis costs a query: product queries, one after another, against a gateway
whose Redis is stopped (SIGSTOP) and against one without Redis at all.

The reference services (5 ms latency), a private redis-server and two gateways: one with
REDIS_URL (entity cache shared level, rate limits and persisted queries through Redis), one
without; both with the entity cache and rate limits on (with budgets no query reaches), so
that every Redis path a query takes runs. Each query reads a product not read before by its
gateway, so that it misses the in-process level and asks the shared one. In turn:

1. without Redis: `--queries` sequential product queries;
2. with Redis, up: the same number;
3. Redis stopped: queries back to back for the first second (the first pays the timeout,
   REDIS_TIMEOUT_MS, and opens the breaker), then `--queries` measured; /readyz timed;
4. Redis continued: the time until the gateway says it is back (its log), and queries again.

Target (issue 16, point 2): after the first second, p99 with Redis stopped at most p99
without Redis + 10 ms, and no query fails. Writes the "Redis stalled" section of
bench/RESULTS.md and bench/redis_stall.json.

    python -m bench.redis_stall [--queries 200] [--rounds 3]

`--root DIR` runs the gateways from another checkout (an earlier commit, extracted with
`git archive`), with `--section` naming its own section of RESULTS.md: the figures before.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.loadgen import percentile
from bench.report import replace_section
from bench.run import GATEWAY_CPU, OTHERS_CPU, set_latency
from tests.harness import Gateway, start_gateway, start_redis, start_services

BENCH = Path(__file__).resolve().parent
QUERY = ("query($id: ID!) { product(id: $id) { id name price { amount currency } "
         "inStock category { id name } } }")
LATENCY_MS = 5
MARGIN_MS = 10.0  # the target: p99 stalled <= p99 without Redis + this
WARM = 4980  # the ids of the warm-up queries (the rounds' ids start at 0)
ENV = {"LOG_LEVEL": "warning", "RATE_LIMIT_ENABLED": "true",
       "RATE_LIMIT_ANONYMOUS": "100000000", "RATE_LIMIT_AUTHENTICATED": "100000000",
       "RATE_LIMIT_GOLD": "100000000"}


class Client:
    """One keep-alive connection; sends a product query and times its answer."""

    def __init__(self, gateway: Gateway) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)

    def _send(self, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body, headers or {})
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionError, http.client.HTTPException):
                # The server closed the idle keep-alive connection (uvicorn: after 5 s,
                # which a slow answer on the other gateway can leave it): open another.
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> tuple[float, int, bytes]:
        began = time.perf_counter()
        status, body = self._send("GET", path)
        return (time.perf_counter() - began) * 1000, status, body

    def product(self, index: int) -> tuple[float, bool]:
        """Milliseconds, and whether the answer was whole (200, the product, no errors)."""
        pid = f"p{1 + index % 5000}"  # (the seed's 5,000 products)
        payload = orjson.dumps({"query": QUERY, "variables": {"id": pid}})
        began = time.perf_counter()
        status, body = self._send("POST", "/graphql", payload,
                                  {"Content-Type": "application/json"})
        took = (time.perf_counter() - began) * 1000
        ok = (status == 200 and b'"errors"' not in body
              and f'"id":"{pid}"'.encode() in body)
        return took, ok

    def close(self) -> None:
        self.conn.close()


def summary(latencies: list[float], failures: int) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {"queries": len(ordered), "failures": failures,
            "p50_ms": percentile(ordered, 0.5), "p99_ms": percentile(ordered, 0.99),
            "max_ms": ordered[-1] if ordered else 0.0}


def sequential(client: Client, start: int, n: int) -> dict[str, Any]:
    return interleaved([client], [start], n)[0]


def interleaved(clients: list[Client], starts: list[int], n: int) -> list[dict[str, Any]]:
    """`n` sequential queries per client, taking turns: the arms compared meet the same
    moments of the machine's noise."""
    latencies: list[list[float]] = [[] for _ in clients]
    failures = [0] * len(clients)
    for i in range(n):
        for k, (client, start) in enumerate(zip(clients, starts, strict=True)):
            took, ok = client.product(start + i)
            latencies[k].append(took)
            failures[k] += not ok
    return [summary(lat, f) for lat, f in zip(latencies, failures, strict=True)]


def first_second(client: Client, start: int) -> dict[str, Any]:
    latencies, failures = [], 0
    began = time.monotonic()
    i = start
    while time.monotonic() - began < 1.0:
        took, ok = client.product(i)
        latencies.append(took)
        failures += not ok
        i += 1
    return {**summary(latencies, failures), "first_ms": latencies[0], "next_index": i}


def log_count(gateway: Gateway, text: str) -> int:
    return gateway.process.log().count(text)


def one_round(plain: Client, shared: Client, stalled_gateway: Gateway, redis_pid: int,
              queries: int, base: int) -> dict[str, Any]:
    """One round on ids from `base` on, each used once per gateway: each arm reads products
    its gateway has not cached yet. `row["end"]`: the first id the round did not use."""
    row: dict[str, Any] = {}
    row["without Redis, beside Redis up"], row["Redis up"] = interleaved(
        [plain, shared], [base, base], queries)
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        first = first_second(shared, base + queries)
        row["Redis stopped: first second"] = first
        start = first["next_index"]
        row["without Redis, beside Redis stopped"], row[STOPPED] = interleaved(
            [plain, shared], [start, start], queries)
        row["readyz_ms"] = shared.get("/readyz")[0]
        row["readyz_status"] = orjson.loads(shared.get("/readyz")[2])["status"]
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    # Until the gateway says Redis is back, a query every 10 ms (an earlier gateway noticed
    # only on a request; this one's background probe needs none).
    back = log_count(stalled_gateway, "redis available again")
    continued = time.monotonic()
    row["recovered_after_s"] = None
    waited = 0
    while time.monotonic() - continued < 30:
        if log_count(stalled_gateway, "redis available again") > back:
            row["recovered_after_s"] = time.monotonic() - continued
            break
        shared.product(WARM + waited % 20)  # (products read in the warm-up: no fresh id)
        waited += 1
        time.sleep(0.01)
    row["Redis continued"] = sequential(shared, start + queries, queries)
    row["end"] = start + 2 * queries
    return row


STOPPED = "Redis stopped: after the first second"
BASELINE = "without Redis, beside Redis stopped"
ARMS = ("without Redis, beside Redis up", "Redis up", "Redis stopped: first second",
        BASELINE, STOPPED, "Redis continued")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_stall")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCH)
    parser.add_argument("--root", type=Path, default=None,
                        help="run the gateways from this checkout (default: this one)")
    parser.add_argument("--section", default="Redis stalled")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-redis-stall-"))
    redis = start_redis(tmp / "redis")
    services = start_services(tmp, cpus=OTHERS_CPU)
    set_latency(services, LATENCY_MS)
    plain = start_gateway(tmp, services, cpus=GATEWAY_CPU, env=ENV, root=args.root)
    shared_gw = start_gateway(tmp, services, cpus=GATEWAY_CPU,
                              env={**ENV, "REDIS_URL": redis.url}, root=args.root)
    assert redis.process is not None
    clients = (Client(plain), Client(shared_gw))
    rounds: list[dict[str, Any]] = []
    try:
        for client in clients:  # connections and code paths warm
            sequential(client, WARM, 20)
        base = 0
        for _ in range(args.rounds):
            row = one_round(*clients, shared_gw, redis.process.pid, args.queries, base)
            base = row["end"]
            print(orjson.dumps(row).decode(), flush=True)
            rounds.append(row)
        transitions = (log_count(shared_gw, "redis unavailable"),
                       log_count(shared_gw, "redis available again"))
    finally:
        for client in clients:
            client.close()
        if redis.process.poll() is None:
            os.kill(redis.process.pid, signal.SIGCONT)
        for process in (plain, shared_gw, services, redis):
            process.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    margins = [r[STOPPED]["p99_ms"] - r[BASELINE]["p99_ms"] for r in rounds]
    failures = sum(r[arm]["failures"] for r in rounds for arm in ARMS)
    met = all(m <= MARGIN_MS for m in margins) and failures == 0
    result = {"queries": args.queries, "rounds": rounds, "p99_margin_ms": margins,
              "failures": failures, "target_met": met,
              "log_lines": {"down": transitions[0], "up": transitions[1]}}
    name = "redis_stall" if args.root is None else "redis_stall_before"
    (args.out / f"{name}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    lines = [
        f"`python -m bench.redis_stall --queries {args.queries} --rounds {args.rounds}"
        + (f" --root {args.root} --section '{args.section}'` (the root: `git archive "
           "COMMIT | tar -x -C ROOT`)" if args.root else "` (`make bench-redis`)")
        + ": sequential product queries, each for a product its gateway "
        f"has not cached, services at {LATENCY_MS} ms, rate limits on; one gateway without "
        "Redis, one whose Redis is stopped with SIGSTOP (all settings at their defaults). "
        "Milliseconds. In each round the two gateways take turns, "
        "query by query, so that the arms compared meet the same noise.",
        "",
        "| round | arm | queries | failures | p50 | p99 | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rounds, 1):
        for arm in ARMS:
            s = r[arm]
            lines.append(f"| {i} | {arm} | {s['queries']} | {s['failures']} | "
                         f"{s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f} |")
    lines += [
        "",
        "Per round, with Redis stopped: the first query "
        + ", ".join(f"{r['Redis stopped: first second']['first_ms']:.0f}" for r in rounds)
        + " ms; /readyz "
        + ", ".join(f"{r['readyz_ms']:.1f} ms ({r['readyz_status']})" for r in rounds)
        + "; back in use "
        + ", ".join("never" if r["recovered_after_s"] is None
                    else f"{r['recovered_after_s']:.2f}" for r in rounds)
        + " s after SIGCONT. p99 stopped (after the first second) "
        "minus p99 without Redis beside it: "
        + ", ".join(f"{m:+.1f}" for m in margins)
        + f" ms (target: at most +{MARGIN_MS:.0f} ms, no failure): "
        + ("met" if met else "NOT met")
        + f". The log said it {transitions[0]} times down and {transitions[1]} times up "
        f"for {len(rounds)} stalls.",
    ]
    body = "\n".join(lines)
    replace_section(args.out / "RESULTS.md", args.section, body)
    print(body)
    return 1 if failures else 0  # a failed query is wrong; a missed target is a figure


if __name__ == "__main__":
    sys.exit(main())
