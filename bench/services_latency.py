"""Latency of the reference services' batch reads (not a test).

Starts the services with the test harness, then times 500 sequential batch reads of each kind
(100 products, 100 users, 200 skus) over one aiohttp session and prints p50/p99 in ms.

    .venv/bin/python bench/services_latency.py [--n 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Services, start_services


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(session: aiohttp.ClientSession, method: str, url: str, body: Any,
                n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        async with session.request(method, url, json=body) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def bench(svc: Services, n: int) -> None:
    products = ",".join(f"p{i}" for i in range(1, 101))
    users = ",".join(f"u{i}" for i in range(1, 101))
    skus = [f"SKU-{i:05d}" for i in range(1, 201)]
    cases = [
        ("100 products", "GET", svc.url("catalog") + f"/products?ids={products}", None),
        ("100 users", "GET", svc.url("users") + f"/users?ids={users}", None),
        ("200 skus", "POST", svc.url("inventory") + "/inventory/query", {"skus": skus}),
    ]
    async with aiohttp.ClientSession() as session:
        for name, method, url, body in cases:
            await timed(session, method, url, body, 20)  # warm up the connection and caches
            samples = await timed(session, method, url, body, n)
            print(f"{name:<13} n={n}  p50 {percentile(samples, 0.5):.2f} ms  "
                  f"p99 {percentile(samples, 0.99):.2f} ms  "
                  f"mean {statistics.fmean(samples):.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        svc = start_services(Path(tmp))
        try:
            asyncio.run(bench(svc, args.n))
        finally:
            svc.stop()


if __name__ == "__main__":
    main()
