"""Resilience under injected faults: the deep query's success rate and latency when the
services answer 503 to a share of requests, and when one service hangs; the load a retry
budget lets through during an outage; and what an open breaker costs a query.

The gateway runs with its defaults except the entity cache (off, so that every query goes
upstream and meets the faults), pinned to core 0; the services (5 ms latency) and the load
on core 1. Appends a section to bench/RESULTS.md and writes bench/resilience.json.

    python -m bench.resilience [--seconds 8] [--lookups 2000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.report import replace_section
from bench.run import GATEWAY_CPU, OTHERS_CPU, loadgen, set_latency, upstream_counts
from tests.harness import Gateway, Services, metric_total, start_gateway, start_services

BENCH = Path(__file__).resolve().parent
SERVICES = ("users", "catalog", "inventory", "orders", "reviews", "recommendations")
LATENCY_MS = 5
CONCURRENCY = 8


def scenario(gateway: Gateway, services: Services, label: str, seconds: float,
             **faults: Any) -> dict[str, Any]:
    set_latency(services, LATENCY_MS)
    for name, settings in faults.items():
        services.set_faults(name, **settings)
    services.reset_stats()
    retries_before = metric_total(gateway.url, "gateway_upstream_retries_total")
    res = loadgen(gateway, "deep", CONCURRENCY, seconds=seconds, requests=None, start_index=0)
    upstream = sum(upstream_counts(services).values())
    ok = res["requests"] - res["failures"] - res["responses_with_errors"]
    row = {
        "scenario": label, "requests": res["requests"], "success_rate": ok / res["requests"],
        "partial_rate": res["partial_responses"] / res["requests"],
        "rps": res["rps"], "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"],
        "upstream_per_query": upstream / res["requests"],
        "retries_per_query": (metric_total(gateway.url, "gateway_upstream_retries_total")
                              - retries_before) / res["requests"],
    }
    print(row, flush=True)
    return row


def outage_load(gateway: Gateway, services: Services, lookups: int) -> int:
    """GET /users requests the users service sees for `lookups` failing lookups."""
    services.reset_stats()
    loadgen(gateway, "user_lookup", 16, seconds=120, requests=lookups, start_index=0)
    return int(services.stats("users")["requests"].get("GET /users", 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.resilience")
    parser.add_argument("--seconds", type=float, default=8.0, help="per fault scenario")
    parser.add_argument("--lookups", type=int, default=2000,
                        help="user lookups against a service answering 503 to everything")
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-resilience-"))
    services = start_services(tmp, cpus=OTHERS_CPU)
    result: dict[str, Any] = {}
    env = {"CACHE_ENABLED": "false", "LOG_LEVEL": "warning"}
    try:
        # 1. The deep query under faults, each scenario on a fresh gateway (closed breakers,
        # full budgets).
        rows = []
        for label, faults in (
            ("no faults", {}),
            ("10% 503 on every service", {s: {"error_rate": 0.1} for s in SERVICES}),
            ("30% 503 on every service", {s: {"error_rate": 0.3} for s in SERVICES}),
            ("reviews hung", {"reviews": {"hang_rate": 1.0}}),
        ):
            gateway = start_gateway(tmp, services, cpus=GATEWAY_CPU, env=env)
            try:
                rows.append(scenario(gateway, services, label, args.seconds, **faults))
            finally:
                gateway.stop()
        result["deep_query"] = rows
        # 2. The load an outage sees: users answer 503 to everything; retries on (the
        # budget) against retries off, breakers off so that the budget alone is measured.
        set_latency(services, 0)
        services.set_faults("users", error_rate=1.0, error_status=503)
        sent = {}
        for label, extra in (("retries off", {"RETRY_MAX_ATTEMPTS": "1"}),
                             ("retries on", {})):
            gateway = start_gateway(tmp, services, cpus=GATEWAY_CPU,
                                    env={**env, "BREAKER_ENABLED": "false", **extra})
            try:
                sent[label] = outage_load(gateway, services, args.lookups)
            finally:
                gateway.stop()
        result["outage"] = {"queries": args.lookups, "requests": sent,
                            "amplification": sent["retries on"] / sent["retries off"]}
        # 3. What an open breaker costs: the same failing lookups with the breaker on (it
        # opens after the first 20 failures), against healthy lookups.
        gateway = start_gateway(tmp, services, cpus=GATEWAY_CPU, env=env)
        try:
            services.reset_stats()
            n = min(500, args.lookups)
            down = loadgen(gateway, "user_lookup", 1, seconds=60, requests=n, start_index=0)
            users_calls = int(services.stats("users")["requests"].get("GET /users", 0))
            services.clear_faults()
            healthy = loadgen(gateway, "user_lookup", 1, seconds=60, requests=n, start_index=0)
        finally:
            gateway.stop()
        result["breaker"] = {"open_p50_ms": down["p50_ms"], "healthy_p50_ms": healthy["p50_ms"],
                             "lookups": n, "requests_reaching_users": users_calls}
    finally:
        services.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    (args.out / "resilience.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    lines = [f"`python -m bench.resilience --seconds {args.seconds:g} --lookups "
             f"{args.lookups}` (make bench-resilience): the deep query at "
             f"concurrency {CONCURRENCY}, {LATENCY_MS} ms upstream latency, entity cache off "
             "(every query meets the faults), default resilience settings (deadline 2 s, "
             "attempt timeout 1 s, 3 attempts, budget 20% + 1/s, breaker at 50% of 20 calls).",
             "Success: the whole answer, no error; partial: data with errors for the failed "
             "part.", "", "| scenario | queries | success | partial | p50 ms | p99 ms | "
             "upstream req/query | retries/query |", "|---|---|---|---|---|---|---|---|"]
    for r in result["deep_query"]:
        lines.append(f"| {r['scenario']} | {r['requests']} | {r['success_rate']:.1%} | "
                     f"{r['partial_rate']:.1%} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['upstream_per_query']:.2f} | "
                     f"{r['retries_per_query']:.2f} |")
    out = result["outage"]
    brk = result["breaker"]
    lines += [
        "", f"Outage load: with users answering 503 to everything, {out['queries']} user "
        f"lookups sent the users service {out['requests']['retries off']} requests with "
        f"retries off and {out['requests']['retries on']} with retries on: "
        f"{out['amplification']:.3f}x (the budget's bound: 1.25x).",
        "", f"Open breaker: {brk['lookups']} lookups of a user while users fail: "
        f"{brk['requests_reaching_users']} requests reached the service, p50 "
        f"{brk['open_p50_ms']:.2f} ms per query (healthy: {brk['healthy_p50_ms']:.2f} ms).", ""]
    replace_section(args.out / "RESULTS.md", "Resilience", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
