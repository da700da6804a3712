"""A load generator that does nothing else: N keep-alive connections, each sending its next
request as soon as the previous answer arrives, for a fixed time or count.

Run as its own process (pinned away from the gateway's core) by `bench/run.py`:
    python -m bench.loadgen URL WORKLOAD --concurrency 32 --seconds 5
It prints one JSON object: counts, elapsed time and latency percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import aiohttp
import orjson

from bench.workloads import EXTRA_WORKLOADS, WORKLOADS

ALL_WORKLOADS = {**WORKLOADS, **EXTRA_WORKLOADS}


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


async def run(
    url: str, workload: str, concurrency: int, seconds: float, max_requests: int | None,
    start_index: int, cycle: int | None = None,
) -> dict[str, Any]:
    make = ALL_WORKLOADS[workload].make
    latencies: list[float] = []
    failures = 0
    errors = 0
    partial = 0  # responses with errors that still carry data
    counter = start_index
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal counter, failures, errors, partial
            while time.perf_counter() < deadline:
                if max_requests is not None and counter - start_index >= max_requests:
                    return
                i = counter
                counter += 1
                # A cycle repeats a working set of requests (warm-cache runs).
                query, variables, headers = make(
                    i if cycle is None else start_index + (i - start_index) % cycle)
                body = orjson.dumps({"query": query, "variables": variables})
                started = time.perf_counter()
                try:
                    async with session.post(
                        url, data=body,
                        headers={"Content-Type": "application/json", **headers},
                    ) as resp:
                        raw = await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok, raw = False, b""
                latencies.append((time.perf_counter() - started) * 1000)
                if not ok:
                    failures += 1
                else:
                    answer = orjson.loads(raw)
                    if answer.get("errors"):
                        errors += 1
                        if answer.get("data"):
                            partial += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "failures": failures,
        "responses_with_errors": errors,
        "partial_responses": partial,
        "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 0.50),
        "p95_ms": percentile(latencies, 0.95),
        "p99_ms": percentile(latencies, 0.99),
        "next_index": counter,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("url")
    parser.add_argument("workload", choices=sorted(ALL_WORKLOADS))
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=None, help="stop after this many")
    parser.add_argument("--start-index", type=int, default=0)
    parser.add_argument("--cycle", type=int, default=None,
                        help="repeat the requests of this many indexes from --start-index")
    args = parser.parse_args(argv)
    result = asyncio.run(
        run(args.url, args.workload, args.concurrency, args.seconds, args.requests,
            args.start_index, args.cycle)
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
