"""The product page with deferred recommendations (issue 18 point 2): how soon the first part
arrives against how long the whole page takes, with the recommendations service slow.

One gateway (entity cache off, so every request does the same work) pinned to core 0; the
services on core 1 with 5 ms of latency each and the recommendations service 250 ms more.
A signed-in client asks, one request at a time in alternating order, for the page of
`bench/queries/product_page_defer.graphql` with `Accept: multipart/mixed;incrementalSpec=v0.2`
(timing when its first part, and when its last part, has been read) and for the same page
without the @defer directives as one JSON answer. Writes the Incremental delivery section of
bench/RESULTS.md and bench/defer.json.

    python -m bench.defer [--requests 40]
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
import orjson

from bench.report import replace_section
from bench.run import GATEWAY_CPU, OTHERS_CPU, set_latency
from tests.gateway.incremental import MULTIPART, multipart_parts
from tests.harness import start_gateway, start_services, token

BENCH = Path(__file__).resolve().parent
PAGE = (BENCH / "queries" / "product_page_defer.graphql").read_text()
WHOLE = PAGE.replace('@defer(label: "reviews")', "").replace(
    '@defer(label: "recommendations")', "")
LATENCY_MS = 5
RECOMMENDATIONS_MS = 250
PRODUCTS = 40  # distinct pages, so that no answer is the previous one's


async def deferred(session: aiohttp.ClientSession, url: str, variables: dict[str, Any],
                   headers: dict[str, str]) -> tuple[float, float, int]:
    started = time.perf_counter()
    async with session.post(url, json={"query": PAGE, "variables": variables},
                            headers={"Accept": MULTIPART, **headers}) as resp:
        parts = multipart_parts(resp)
        first_part = await parts.__anext__()
        first = time.perf_counter() - started
        rest = [part async for part in parts]
    assert "recommendations" not in first_part["data"]["me"], first_part
    assert not any(p.get("errors") or any(e.get("errors") for e in p.get("incremental") or ())
                   for p in [first_part, *rest]), rest
    return first, time.perf_counter() - started, 1 + len(rest)


async def whole(session: aiohttp.ClientSession, url: str, variables: dict[str, Any],
                headers: dict[str, str]) -> float:
    started = time.perf_counter()
    async with session.post(url, json={"query": WHOLE, "variables": variables},
                            headers={"Accept": "application/json", **headers}) as resp:
        body = await resp.json()
    assert not body.get("errors") and body["data"]["me"]["recommendations"], body
    return time.perf_counter() - started


async def measure(url: str, requests: int) -> dict[str, list[float]]:
    headers = {"Authorization": f"Bearer {token('u1')}"}
    samples: dict[str, list[float]] = {"first": [], "last": [], "whole": [], "parts": []}
    async with aiohttp.ClientSession() as session:
        for i in range(requests + 5):
            variables = {"id": f"p{i % PRODUCTS + 1}"}
            # Alternating which goes first, so that drift hits both alike.
            order = (0, 1) if i % 2 else (1, 0)
            for which in order:
                if which == 0:
                    first, last, parts = await deferred(session, url, variables, headers)
                    if i >= 5:  # (the first five warm the gateway up)
                        samples["first"].append(first)
                        samples["last"].append(last)
                        samples["parts"].append(parts)
                else:
                    took = await whole(session, url, variables, headers)
                    if i >= 5:
                        samples["whole"].append(took)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.defer")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        services = start_services(tmp, cpus=OTHERS_CPU)
        gateway = None
        try:
            set_latency(services, LATENCY_MS)
            services.set_faults("recommendations", latency_ms=LATENCY_MS + RECOMMENDATIONS_MS)
            gateway = start_gateway(tmp, services, cpus=GATEWAY_CPU, env={
                "CACHE_ENABLED": "false", "LOG_LEVEL": "warning"})
            samples = asyncio.run(measure(gateway.url + "/graphql", args.requests))
        finally:
            if gateway is not None:
                gateway.stop()
            services.stop()

    def ms(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    figures = {key: {"p50_ms": statistics.median(values) * 1000, "p90_ms": ms(values, 0.9)}
               for key, values in samples.items() if key != "parts"}
    result = {"requests": args.requests, "latency_ms": LATENCY_MS,
              "recommendations_extra_ms": RECOMMENDATIONS_MS, "figures": figures,
              "parts": statistics.median(samples["parts"])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "defer.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    first, last, plain = (figures[k]["p50_ms"] for k in ("first", "last", "whole"))
    rows = [
        f"| deferred page, first part | {first:.1f} | {figures['first']['p90_ms']:.1f} |",
        f"| deferred page, last part (the whole page) | {last:.1f} | "
        f"{figures['last']['p90_ms']:.1f} |",
        f"| the same page without @defer, one JSON answer | {plain:.1f} | "
        f"{figures['whole']['p90_ms']:.1f} |",
    ]
    body = "\n".join([
        f"`python -m bench.defer --requests {args.requests}` (`make bench-defer`): the product "
        "page of `bench/queries/product_page_defer.graphql` (product, stock, category and "
        "rating at once; reviews and the signed-in caller's recommendations deferred), one "
        f"request at a time, {args.requests} of each kind in alternating order; services at "
        f"{LATENCY_MS} ms of latency, recommendations {RECOMMENDATIONS_MS} ms more; entity "
        "cache off; gateway on core 0, services and client on core 1.",
        "",
        "| what the client has read | p50 ms | p90 ms |",
        "|---|---|---|",
        *rows,
        "",
        f"The first part comes at the floor of the fast services, {first / plain:.3f} of the "
        f"time of the whole page ({last / plain:.2f}x for its last part: the deferred "
        "parts start with the rest, so the whole page costs what it costs undeferred). "
        f"Parts per page: {result['parts']:.0f}.",
    ])
    replace_section(args.out / "RESULTS.md", "Incremental delivery", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
