"""The client's CPU per upstream call: aiohttp against pyreqwest (Rust's reqwest), raw and
behind `UpstreamClient`, in one run.

    python -m bench.upstream_client [--rounds 5 --seconds 1.5 --concurrency 1,16] [--smoke]

Issue 19 asks for a Rust-backed client measured behind the same `UpstreamClient` interface.
Four ways to make the same call, GET catalog /products?ids=pN with the client's JSON
headers, on kept-alive connections:

- `aiohttp`: a bare `ClientSession.get` and `read()`;
- `pyreqwest`: a bare pyreqwest `Client.get(...).send()` and `bytes()`;
- `client`: the gateway's `UpstreamClient.request` (aiohttp), with the gateway's own
  observer (metrics; tracing off, as without an exporter) and a request's deadline: the
  budget, the breaker, the timeouts, the JSON decoding;
- `client_pyreqwest`: the same `UpstreamClient`, with pyreqwest in place of aiohttp at
  its one seam, `_send` (one attempt: bench/reqwest_client.py).

This process runs alone on core 0 (`sched_setaffinity`), on uvloop as the gateway does; the
reference services run on core 1. CPU is this process's user + system time
(`time.process_time`: every thread, so pyreqwest's Tokio thread too) per call answered.
Each round measures every variant in turn, the order rotated each round; the report gives
each variant's median and the median of the per-round ratios. Writes bench/client.json and
the "Upstream client and server settings" section of bench/RESULTS.md (with
bench/server_settings.json, if `python -m bench.server_settings` wrote one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from pyreqwest.client import ClientBuilder

from app.config.settings import Settings
from app.telemetry.tracing import build_telemetry
from app.upstream.client import JSON_HEADERS, CallScope, UpstreamClient
from app.upstream.resilience import Deadline
from bench.report import replace_section
from bench.reqwest_client import ReqwestUpstreamClient
from bench.run import BENCH, GATEWAY_CPU, OTHERS_CPU, set_latency
from tests.harness import start_services

SECTION = "Upstream client and server settings"
VARIANTS = ("aiohttp", "pyreqwest", "client", "client_pyreqwest")
# The ratios reported: (numerator, denominator).
RATIOS = (("pyreqwest", "aiohttp"), ("client_pyreqwest", "client"), ("client", "aiohttp"))
PRODUCTS = 5_000
PATH = "/products"


Call = Callable[[int], Awaitable[None]]


def ids(i: int) -> dict[str, str]:
    return {"ids": f"p{i % PRODUCTS + 1}"}


async def variants(settings: Settings) -> tuple[dict[str, Call], Callable[[], Awaitable[None]]]:
    """Each variant's call, and what closes them all."""
    url = settings.service_url("catalog") + PATH
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit_per_host=settings.upstream_pool_size),
        skip_auto_headers=("User-Agent",))
    reqwest = ClientBuilder().max_connections(settings.upstream_pool_size).build()
    observer = build_telemetry(settings).observer  # the gateway's: tracing off, metrics on
    client = UpstreamClient(settings, observer)
    client_rs = ReqwestUpstreamClient(settings, observer)
    await client.start()
    await client_rs.start()
    scope = CallScope(deadline=Deadline(settings.request_deadline_s))

    async def raw_aiohttp(i: int) -> None:
        async with session.get(url, params=ids(i), headers=JSON_HEADERS) as resp:
            await resp.read()
            assert resp.status == 200

    async def raw_pyreqwest(i: int) -> None:
        resp = await reqwest.get(url).query(ids(i)).headers(JSON_HEADERS).build().send()
        await resp.bytes()
        assert resp.status == 200

    def through(upstream: UpstreamClient) -> Call:
        async def call(i: int) -> None:
            nonlocal scope
            if scope.deadline is not None and scope.deadline.remaining() < 1.0:
                scope = CallScope(deadline=Deadline(settings.request_deadline_s))
            body = await upstream.request("catalog", "GET", PATH, params=ids(i), scope=scope)
            assert body["items"], body
        return call

    async def close() -> None:
        await session.close()
        await reqwest.close()
        await client.close()
        await client_rs.close()

    return ({"aiohttp": raw_aiohttp, "pyreqwest": raw_pyreqwest, "client": through(client),
             "client_pyreqwest": through(client_rs)}, close)


async def cell(call: Call, concurrency: int, seconds: float, calls: int | None,
               index: int) -> tuple[float, float]:
    """(CPU us per call, calls/s) of `concurrency` tasks calling for `seconds` (or `calls`
    each)."""
    done = 0

    async def worker(k: int) -> None:
        nonlocal done
        i = index + k
        n = 0
        while (n < calls) if calls is not None else (time.perf_counter() < stop):
            await call(i)
            i += concurrency
            n += 1
        done += n

    stop = time.perf_counter() + seconds / 4  # warm-up: connections opened, caches filled
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    done = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    stop = wall0 + seconds
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu * 1e6 / max(1, done), done / wall


async def measure(settings: Settings, concurrencies: list[int], rounds: int, seconds: float,
                  calls: int | None) -> list[dict[str, Any]]:
    calls_of, close = await variants(settings)
    rows: list[dict[str, Any]] = []
    try:
        index = 0
        for concurrency in concurrencies:
            us: dict[str, list[float]] = {v: [] for v in VARIANTS}
            rate: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for r in range(rounds):
                order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
                for variant in order:
                    cpu, per_s = await cell(calls_of[variant], concurrency, seconds, calls,
                                            index)
                    index += 100_000
                    us[variant].append(cpu)
                    rate[variant].append(per_s)
            ratios = {f"{a}/{b}": [x / y if y else 1.0 for x, y in zip(us[a], us[b], strict=True)]
                      for a, b in RATIOS}
            row: dict[str, Any] = {"concurrency": concurrency, "us": us, "rate": rate,
                   "median_us": {v: statistics.median(us[v]) for v in VARIANTS},
                   "median_rate": {v: statistics.median(rate[v]) for v in VARIANTS},
                   "ratios": ratios,
                   "median_ratio": {k: statistics.median(v) for k, v in ratios.items()}}
            rows.append(row)
            print(f"c={concurrency:<3} " + ", ".join(
                f"{v} {row['median_us'][v]:.0f} us" for v in VARIANTS) + "; " + ", ".join(
                f"{k} {x:.2f}" for k, x in row["median_ratio"].items()), flush=True)
    finally:
        await close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream_client")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="measured time per cell")
    parser.add_argument("--smoke", action="store_true", help="a few calls per cell")
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {int(GATEWAY_CPU)})  # the services go to core 1 (taskset)
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        services = start_services(Path(tmp), cpus=OTHERS_CPU)
        try:
            set_latency(services, 0)
            settings = Settings.from_env({**os.environ, **services.gateway_env()})
            rows = uvloop.run(measure(settings, [int(c) for c in args.concurrency.split(",")],
                                      args.rounds, args.seconds, 3 if args.smoke else None))
        finally:
            services.stop()
    command = (f"python -m bench.upstream_client --concurrency {args.concurrency} "
               f"--rounds {args.rounds} --seconds {args.seconds:g}"
               + (" --smoke" if args.smoke else ""))
    report = {"command": command, "rows": rows}
    (args.out / "client.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    write_section(args.out)
    return 0


# -- the report ----------------------------------------------------------------------------------
def client_lines(report: Mapping[str, Any]) -> list[str]:
    lines = [
        f"`{report['command']}` (`make bench-client`): the client alone on core 0 (uvloop), "
        "the reference services on core 1, upstream latency 0; GET catalog "
        "/products?ids=pN on kept-alive connections. CPU: the client process's user + "
        "system time (every thread: pyreqwest's Tokio thread too) per call. Ratios: the "
        "median of the per-round ratios (each round measures every variant, the order "
        "rotated).", "",
        "| conc. | aiohttp us/call | pyreqwest us/call | UpstreamClient (aiohttp) us/call | "
        "UpstreamClient (pyreqwest) us/call | pyreqwest / aiohttp | client: pyreqwest / "
        "aiohttp | UpstreamClient / raw aiohttp | calls/s (aiohttp, pyreqwest, client, "
        "client_pyreqwest) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        us, ratio, rate = row["median_us"], row["median_ratio"], row["median_rate"]
        lines.append(
            f"| {row['concurrency']} | " + " | ".join(f"{us[v]:.0f}" for v in VARIANTS)
            + " | " + " | ".join(f"{ratio[f'{a}/{b}']:.2f} ("
                                 + ", ".join(f"{x:.2f}" for x in row["ratios"][f"{a}/{b}"])
                                 + ")" for a, b in RATIOS)
            + " | " + ", ".join(f"{rate[v]:.0f}" for v in VARIANTS) + " |")
    return lines


def write_section(out: Path) -> None:
    """The section from whichever of bench/client.json and bench/server_settings.json exist."""
    parts: list[str] = []
    client = out / "client.json"
    if client.exists():
        parts += ["### The upstream client", "", *client_lines(orjson.loads(client.read_bytes()))]
    server = out / "server_settings.json"
    if server.exists():
        from bench.server_settings import server_lines
        parts += ["", "### uvicorn's settings", "",
                  *server_lines(orjson.loads(server.read_bytes()))]
    conclusion = out / "client_conclusion.md"  # hand-written, from the figures above
    if conclusion.exists():
        parts += ["", "### Conclusion", "", conclusion.read_text().strip("\n")]
    replace_section(out / "RESULTS.md", SECTION, "\n".join(parts))
    print("\n".join(parts))


if __name__ == "__main__":
    sys.exit(main())
