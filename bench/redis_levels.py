"""What the entity cache's shared level costs per batch on one Redis and on a Redis Cluster.

A RedisLevel (app/cache/levels.py) against a private redis-server, then a private Redis
Cluster (three masters with a replica each), in one run: the read of a batch of keys (values
and their buckets' epochs), its write (the race-checking script) and an invalidation, timed
one after another on an idle loop. On one Redis each is one command; on the cluster, one
command per bucket the batch touches (up to CLUSTER_BUCKETS), pipelined per master. Appends
a section to bench/RESULTS.md and writes bench/redis_levels.json.

    python -m bench.redis_levels [--batch 10,100] [--rounds 300]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from app.cache.levels import RedisLevel
from app.core import redisclient
from app.core.redisguard import RedisGuard
from bench.report import replace_section
from tests.harness import start_redis, start_redis_cluster

BENCH = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_levels")
    parser.add_argument("--batch", default="10,100")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    batches = [int(b) for b in args.batch.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-levels-"))
    single = start_redis(tmp / "redis")
    cluster = start_redis_cluster(tmp / "cluster")
    try:
        results = {kind: asyncio.run(measure(url, batches, args.rounds))
                   for kind, url in (("single", single.url), ("cluster", cluster.url))}
    finally:
        single.stop()
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    (args.out / "redis_levels.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2))
    rows = ["| batch | operation | one Redis ms | cluster ms | ratio |", "|---|---|---|---|---|"]
    for batch in batches:
        for op in ("read", "write", "invalidate"):
            one, many = results["single"][str(batch)][op], results["cluster"][str(batch)][op]
            rows.append(f"| {batch} | {op} | {one:.3f} | {many:.3f} | {many / one:.2f}x |")
    body = (f"`python -m bench.redis_levels --batch {args.batch} --rounds {args.rounds}`: "
            "the entity cache's Redis level, median milliseconds per call (client CPU and "
            "the loopback round trips), on one Redis and on a Redis Cluster of three "
            "masters, in one run.\n\n" + "\n".join(rows))
    replace_section(args.out / "RESULTS.md", "Redis Cluster: the shared level's cost", body)
    print(body)
    return 0


async def measure(url: str, batches: list[int], rounds: int) -> dict[str, dict[str, float]]:
    # Through the guard, as in the gateway; a timeout long enough that a slow call is timed,
    # not answered by the fallback (the assertion below would say so).
    redis = RedisGuard(redisclient.connect(url), timeout_s=1.0, open_s=1.0)
    level = RedisLevel(redis, f"bench:{time.time_ns()}:", "invalidate", "bench")
    out: dict[str, dict[str, float]] = {}
    try:
        await level.read(["warm-up"])
        for batch in batches:
            timings: dict[str, list[float]] = {"read": [], "write": [], "invalidate": []}
            for r in range(rounds):
                keys = [f"product:0:p{r * batch + i}" for i in range(batch)]
                started = time.perf_counter()
                _, epochs = await level.read(keys)
                timings["read"].append(time.perf_counter() - started)
                started = time.perf_counter()
                await level.write([(k, b"[1,{}]", 60_000) for k in keys], epochs)
                timings["write"].append(time.perf_counter() - started)
                started = time.perf_counter()
                await level.invalidate(keys, 60_000)
                timings["invalidate"].append(time.perf_counter() - started)
            assert redis.up, "Redis failed during the benchmark"
            out[str(batch)] = {op: statistics.median(t) * 1000 for op, t in timings.items()}
    finally:
        await level.close()
        await redis.close()
    return out


if __name__ == "__main__":
    sys.exit(main())
