"""How fast an eviction on one replica reaches another through Redis pub/sub.

Two gateway replicas share a private Redis, then a private Redis Cluster (three masters with
a replica each; sharded pub/sub); only replica a receives the services' change events. Each
round caches a product on replica b, renames it at the catalog, and polls b every
millisecond until it serves the new name: the time from the catalog's answer to b's fresh
read covers the event's delivery to a, a's invalidation, the pub/sub message and b's
eviction. Appends a section to bench/RESULTS.md and writes bench/invalidation.json.

    python -m bench.invalidation [--rounds 50] [--redis single,cluster]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.loadgen import percentile
from bench.report import replace_section
from tests.harness import (
    free_port,
    http,
    start_gateway,
    start_redis,
    start_redis_cluster,
    start_services,
)

BENCH = Path(__file__).resolve().parent
QUERY = 'query($id: ID!) { product(id: $id) { id name } }'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.invalidation")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--redis", default="single,cluster",
                        help="which Redis to measure on: single, cluster or both")
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {kind: measure(kind, args.rounds) for kind in args.redis.split(",")}
    (args.out / "invalidation.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2))
    names = {"single": "one Redis", "cluster": "a Redis Cluster (3 masters, 3 replicas)"}
    lines = [f"- {names[kind]}: p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
             f"max {r['max_ms']:.1f} ms" for kind, r in results.items()]
    body = (
        f"`python -m bench.invalidation --rounds {args.rounds} --redis {args.redis}`: from "
        "the catalog's answer to a write until a replica that receives no events serves the "
        "new data (event to replica a, a's invalidation, Redis pub/sub, eviction on b, b's "
        "next read), target under 100 ms:\n\n" + "\n".join(lines)
    )
    replace_section(args.out / "RESULTS.md", "Cross-replica invalidation", body)
    print(body)
    return 0


def measure(kind: str, rounds: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-inv-"))
    redis = (start_redis(tmp / "redis") if kind == "single"
             else start_redis_cluster(tmp / "cluster"))
    port_a = free_port()
    services = start_services(tmp, webhooks=[f"http://127.0.0.1:{port_a}/events"])
    env = {"REDIS_URL": redis.url, "LOG_LEVEL": "warning"}
    a = start_gateway(tmp, services, port=port_a, env=env)
    b = start_gateway(tmp, services, env=env)
    took: list[float] = []
    try:
        for i in range(rounds):
            pid = f"p{100 + i}"
            http("POST", b.url + "/graphql", {"query": QUERY, "variables": {"id": pid}})
            name = f"Renamed {i} {time.time()}"
            status, _, _ = http("PATCH", services.url("catalog") + f"/products/{pid}",
                                {"name": name})
            assert status == 200
            changed = time.perf_counter()
            while True:
                _, _, body = http("POST", b.url + "/graphql",
                                  {"query": QUERY, "variables": {"id": pid}})
                if body["data"]["product"]["name"] == name:
                    break
                if time.perf_counter() - changed > 5:
                    raise AssertionError(f"replica b never saw {pid} change")
                time.sleep(0.001)
            took.append((time.perf_counter() - changed) * 1000)
    finally:
        for process in (a, b, services, redis):
            process.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    took.sort()
    return {"rounds": len(took), "p50_ms": percentile(took, 0.5),
            "p95_ms": percentile(took, 0.95), "max_ms": took[-1],
            "mean_ms": statistics.fmean(took)}


if __name__ == "__main__":
    sys.exit(main())
