"""Scale-out: two gateway processes behind one port sharing Redis, against one process; and
the cache hit ratio a second replica sees once the first has warmed the shared cache.

This machine has two cores and the services and the load generator need one, so one
process runs on core 0 and two processes may use both cores (sharing core 1 with the
services and the load): the ratio is what a second core buys here, not linear scaling.
Appends a section to bench/RESULTS.md and writes bench/scaleout.json.

    python -m bench.scaleout [--seconds 4]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import orjson

from bench.report import replace_section
from bench.run import OTHERS_CPU, loadgen, upstream_counts
from tests.harness import Gateway, metric_total, start_gateway, start_redis, start_services

BENCH = Path(__file__).resolve().parent
WORKING_SET = 100


def cache_counts(gateway: Gateway) -> dict[str, float]:
    return {outcome: metric_total(gateway.url, "gateway_cache_events_total", outcome=outcome)
            for outcome in ("hit", "miss")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    redis = start_redis(tmp / "redis")
    services = start_services(tmp, cpus=OTHERS_CPU)
    throughput: dict[str, dict[str, float]] = {}  # workload -> processes -> req/s
    try:
        # 1. One process against two behind one port, both on the shared Redis.
        for workers, cpus in ((1, "0"), (2, "0,1")):
            gateway = start_gateway(tmp, services, cpus=cpus, env={
                "GATEWAY_WORKERS": str(workers), "REDIS_URL": redis.url,
                "REDIS_PREFIX": f"scale-{uuid.uuid4().hex[:6]}", "LOG_LEVEL": "warning"})
            try:
                for workload, warm in (("deep", False), ("product_page", True)):
                    cycle = WORKING_SET if warm else None
                    if warm:
                        loadgen(gateway, workload, 32, seconds=60, requests=WORKING_SET,
                                start_index=0, cycle=cycle)
                    res = loadgen(gateway, workload, 32, seconds=args.seconds, requests=None,
                                  start_index=0, cycle=cycle)
                    # The entity cache is on in both: the deep query repeats, so after its
                    # first answer it is served from the cache too.
                    key = f"{workload} ({'warm working set' if warm else 'repeated'})"
                    throughput.setdefault(key, {})[str(workers)] = res["rps"]
            finally:
                gateway.stop()
        # 2. Replica a warms the shared cache; replica b then reads the same working set.
        prefix = f"scale-{uuid.uuid4().hex[:6]}"
        env = {"REDIS_URL": redis.url, "REDIS_PREFIX": prefix, "LOG_LEVEL": "warning"}
        a = start_gateway(tmp, services, cpus="0", env=env)
        b = start_gateway(tmp, services, cpus="0", env=env)
        try:
            loadgen(a, "product_page", 8, seconds=60, requests=WORKING_SET, start_index=0,
                    cycle=WORKING_SET)
            services.reset_stats()
            before = cache_counts(b)
            loadgen(b, "product_page", 8, seconds=60, requests=WORKING_SET, start_index=0,
                    cycle=WORKING_SET)
            after = cache_counts(b)
            hits = after.get("hit", 0) - before.get("hit", 0)
            misses = after.get("miss", 0) - before.get("miss", 0)
            second: dict[str, float] = {
                "lookups": hits + misses, "hits": hits,
                "hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
                "upstream_requests": sum(upstream_counts(services).values()),
                "queries": WORKING_SET,
            }
        finally:
            a.stop()
            b.stop()
    finally:
        services.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"throughput": throughput, "second_replica": second}
    (args.out / "scaleout.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    lines = ["`python -m bench.scaleout`: one gateway process on core 0 against two behind one "
             "port (GATEWAY_WORKERS=2: two processes, each with its own SO_REUSEPORT socket) "
             "on both cores, sharing Redis, at concurrency 32. The services and the load "
             "generator share core 1, so this is what a second core buys on this 2-core "
             "machine.", "",
             "| workload | 1 process req/s | 2 processes req/s | ratio |", "|---|---|---|---|"]
    for key, by in throughput.items():
        lines.append(f"| {key} | {by['1']:.0f} | {by['2']:.0f} | {by['2'] / by['1']:.2f}x |")
    lines += ["", f"Second replica after the first warmed Redis ({second['queries']} product "
              f"pages): {second['hit_ratio']:.0%} of its {second['lookups']:.0f} entity "
              f"lookups hit the shared cache, with {second['upstream_requests']} upstream "
              "requests.", ""]
    replace_section(args.out / "RESULTS.md", "Scale-out", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
