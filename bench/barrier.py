"""The plan executor without a level barrier, against an earlier commit that had one.

    python -m bench.barrier --base 3cfee5b [--requests 40]

One set of reference services, two gateways (this checkout and `--base`, checked out into a
temporary git worktree), entity and response caches off, so every query goes upstream.
At concurrency 1 the two gateways take turns, query by query, under each latency scenario:
the services' injected latency per service (`/_faults`). For each: p50 and p99 of the
query's time, the floor (the slowest chain of dependent calls, which a barrier-free
executor can reach; a barrier pays each level's slowest call instead), and the upstream
requests per query (`/_stats`). Writes the "No level barrier" section of bench/RESULTS.md
and bench/barrier.json. With `--floor`, bench/floor_app.py (the same upstream calls with
aiohttp and no GraphQL: bench/speed.py) takes its turn too: what any Python gateway on
aiohttp spends over the floor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench.checkout import checkout, short
from bench.report import replace_section
from tests.harness import Gateway, Services, start_gateway, start_services

BENCH = Path(__file__).resolve().parent
SECTION = "No level barrier"
QUERIES = BENCH / "queries"
ENV = {"CACHE_ENABLED": "false", "RESPONSE_CACHE": "false", "LOG_LEVEL": "warning",
       "BREAKER_ENABLED": "false"}
SERVICES = ("users", "catalog", "inventory", "orders", "reviews", "recommendations")

# (name, query file, variables, latency per service in ms (others: `rest`), rest,
#  floor without a barrier, floor with one), the floors from the queries' levels:
#  deep: 1 topProducts (catalog) -> 2 inStock (inventory), category (catalog), reviews
#  -> 3 author (users) -> 4 author's reviews -> 5 product (catalog) -> 6 inStock, reviews
#  -> 7 author (users). product_page: 1 product -> 2 inventory, category, reviews
#  -> 3 author (users).
SCENARIOS: list[tuple[str, str, dict[str, Any], dict[str, float], float, float, float]] = [
    # No injected latency: what the query costs without waiting (the gateway's CPU on the
    # critical path, and the services' own time for its seven dependent rounds).
    ("deep, no injected latency", "deep.graphql", {}, {}, 0, 0, 0),
    ("deep, every service 5 ms", "deep.graphql", {}, {}, 5, 35, 35),
    ("deep, inventory 80 ms, the others 5 ms", "deep.graphql", {}, {"inventory": 80}, 5,
     5 * 5 + 80, 5 * 5 + 2 * 80),
    ("product page, inventory 80 ms, reviews 30 ms, the others 5 ms", "product_page.graphql",
     {"id": "p7"}, {"inventory": 80, "reviews": 30}, 5, 5 + 80, 5 + 80 + 5),
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def total_requests(services: Services) -> int:
    return sum(sum(stats["requests"].values()) for stats in services.all_stats().values())


class Client:
    """One kept-alive connection to a gateway."""

    def __init__(self, gateway: Gateway) -> None:
        parts = urlsplit(gateway.url)
        self.connection = HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)

    def timed(self, payload: bytes) -> float:
        """The query's time in ms, from sending it to its whole answer."""
        started = time.perf_counter()
        self.connection.request("POST", "/graphql", payload,
                                {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200 or "errors" in orjson.loads(body):
            raise RuntimeError(f"{response.status}: {body[:300]!r}")
        return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.barrier")
    parser.add_argument("--base", required=True, help="an earlier commit, with the barrier")
    parser.add_argument("--requests", type=int, default=40, help="per side and scenario")
    parser.add_argument("--floor", action="store_true",
                        help="also time bench/floor_app.py (no GraphQL) in each scenario")
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    base, head = short(args.base), short("HEAD")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-barrier-") as tmpdir, \
            checkout(base, Path(tmpdir) / "base") as earlier:
        tmp = Path(tmpdir)
        started: list[Any] = []
        try:
            services = start_services(tmp / "services")
            started.append(services)
            sides = {"head": start_gateway(tmp / "head", services, env=ENV),
                     "base": start_gateway(tmp / "base-gw", services, env=ENV, root=earlier)}
            if args.floor:
                from bench.speed import start_floor
                sides["floor"] = start_floor(tmp, services, cpus=None)
            started.extend(sides.values())
            clients = {side: Client(gateway) for side, gateway in sides.items()}
            for name, file, variables, latency, rest, floor, barrier_floor in SCENARIOS:
                for service in SERVICES:
                    services.set_faults(service, latency_ms=latency.get(service, rest))
                payload = orjson.dumps({"query": (QUERIES / file).read_text(),
                                        "variables": variables})
                samples: dict[str, list[float]] = {side: [] for side in sides}
                calls = dict.fromkeys(sides, 0)
                for client in clients.values():  # warm-up: connections, parsing caches
                    client.timed(payload)
                order = list(sides)
                for i in range(args.requests):
                    for side in (order if i % 2 == 0 else order[::-1]):
                        before = total_requests(services)
                        samples[side].append(clients[side].timed(payload))
                        calls[side] += total_requests(services) - before
                for side in ("base", "head", "floor"):
                    if side not in sides:
                        continue
                    row = {"scenario": name, "side": side,
                           "commit": {"base": base, "head": head}.get(side, "floor app"),
                           "p50": statistics.median(samples[side]),
                           "p99": percentile(samples[side], 0.99),
                           "floor": floor, "barrier_floor": barrier_floor,
                           "upstream": calls[side] / args.requests}
                    rows.append(row)
                    print(row, flush=True)
        finally:
            for process in reversed(started):
                process.stop()
    (args.out / "barrier.json").write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    command = (f"python -m bench.barrier --base {args.base} --requests {args.requests}"
               + (" --floor" if args.floor else ""))
    lines = [
        f"`{command}` (`make bench-barrier`): concurrency 1, caches off, the two gateways "
        "taking turns query by query on one set of services. Floor: the slowest chain of "
        "dependent calls (what an executor without a barrier can reach); with a barrier, "
        "each level waits for its slowest call. Milliseconds.", "",
        "| scenario | commit | p50 | p99 | floor | floor with a barrier | p50 - floor | "
        "upstream req/query |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        label = ("bench/floor_app.py (aiohttp, no GraphQL)" if row["side"] == "floor" else
                 f"{row['commit']} ({'before' if row['side'] == 'base' else 'after'})")
        lines.append(
            f"| {row['scenario']} | {label} | {row['p50']:.1f} | {row['p99']:.1f} | "
            f"{row['floor']:g} | {row['barrier_floor']:g} | {row['p50'] - row['floor']:.1f} | "
            f"{row['upstream']:.2f} |")
    lines += ["", "Reading: with one slow service the barrier made every level wait for it, so a "
              "query paid the sum of each level's slowest call; without it, the query's time "
              "follows its slowest chain of dependent calls. With equal latencies the two "
              "are the same floor, the upstream requests stay at the minimum (one per "
              "service per level), and what is left over the floor is the time the query "
              "takes without waiting: the gateway's own CPU on the critical path (issue "
              "19's CPU work; `make bench-speed`) and the services' own time for each "
              "dependent round, both measured by the first row (no injected latency)."]
    replace_section(args.out / "RESULTS.md", SECTION, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
