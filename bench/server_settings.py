"""The gateway's CPU per request and req/s under other uvicorn settings, and with pyreqwest
as its upstream client, against the gateway as it is, in one run.

    python -m bench.server_settings [--rounds 3 --seconds 1.5 --concurrency 1,32]

Issue 19: "uvicorn stays (with httptools and uvloop); measure its settings". Each variant
is the gateway (bench/serve_variant.py: `python -m app` with uvicorn.Config arguments laid
over its own), started once, pinned to core 0 in turn, caches off, upstream latency 0, the
services and the load generator on core 1 (as bench/speed.py). Variants:

- `gateway`: as configured (uvloop; GuardedHttpToolsProtocol, app/http/connections.py;
  limit_concurrency MAX_CONNECTIONS; timeout_keep_alive KEEPALIVE_TIMEOUT_S);
- `httptools`, `h11`: uvicorn's own protocols in place of the guarded one (so without its
  header and body timeouts, header size limit and JSON 503: measured here only);
- `asyncio`: the standard event loop in place of uvloop;
- `no_limit`: limit_concurrency None (no connection cap to count against);
- `keepalive_75`, `backlog_4096`: timeout_keep_alive 75 s, backlog 4096 (the load
  generator keeps its connections: neither should show);
- `pyreqwest`: the upstream client with pyreqwest at its seam (bench/reqwest_client.py).

Each round measures every variant, the order rotated; the report gives each variant's
median CPU ms/request and req/s and the median of its per-round ratios to `gateway`.
Writes bench/server_settings.json and, with bench/client.json, the "Upstream client and
server settings" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from bench.run import BENCH, GATEWAY_CPU, OTHERS_CPU, set_latency
from bench.serve_variant import ENV as SERVER_ENV
from bench.speed import ENV, cell
from tests.harness import Gateway, Process, start_gateway, start_services

VARIANTS: dict[str, dict[str, Any]] = {
    "gateway": {},
    "httptools": {"http": "httptools"},
    "h11": {"http": "h11"},
    "asyncio": {"loop": "asyncio"},
    "no_limit": {"limit_concurrency": None},
    "keepalive_75": {"timeout_keep_alive": 75},
    "backlog_4096": {"backlog": 4096},
    "pyreqwest": {"client": "pyreqwest"},
}
BASE = "gateway"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server_settings")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--workloads", default="typename,product_page")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5, help="measured time per cell")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--smoke", action="store_true", help="a few requests per cell")
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    if BASE not in names:
        names.insert(0, BASE)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmpdir:
        tmp = Path(tmpdir)
        started: list[Process | Gateway] = []
        try:
            services = start_services(tmp, cpus=OTHERS_CPU)
            started.append(services.process)
            set_latency(services, 0)
            gateways: dict[str, Gateway] = {}
            for name in names:
                gateways[name] = start_gateway(
                    tmp, services, cpus=GATEWAY_CPU, module="bench.serve_variant",
                    env={**ENV, SERVER_ENV: orjson.dumps(VARIANTS[name]).decode()})
                started.append(gateways[name])
            index = 0
            for workload in args.workloads.split(","):
                for concurrency in map(int, args.concurrency.split(",")):
                    cpu: dict[str, list[float]] = {n: [] for n in names}
                    rps: dict[str, list[float]] = {n: [] for n in names}
                    requests = 4 * concurrency if args.smoke else None
                    for r in range(args.rounds):
                        for name in names[r % len(names):] + names[:r % len(names)]:
                            ms, per_s = cell(gateways[name], workload, concurrency,
                                             args.seconds, args.warmup, index, requests)
                            cpu[name].append(ms)
                            rps[name].append(per_s)
                        index += 10_000
                    row = summary(workload, concurrency, cpu, rps)
                    rows.append(row)
                    print(f"{workload:13} c={concurrency:<3} " + ", ".join(
                        f"{n} {row['median_cpu'][n]:.3f} ms ({row['cpu_ratio'][n]:.2f})"
                        for n in names), flush=True)
        finally:
            for process in reversed(started):
                process.stop()
    command = (f"python -m bench.server_settings --variants {','.join(names)} "
               f"--workloads {args.workloads} --concurrency {args.concurrency} "
               f"--rounds {args.rounds} --seconds {args.seconds:g}"
               + (" --smoke" if args.smoke else ""))
    report = {"command": command, "variants": {n: VARIANTS[n] for n in names}, "rows": rows}
    (args.out / "server_settings.json").write_bytes(
        orjson.dumps(report, option=orjson.OPT_INDENT_2))
    from bench.upstream_client import write_section

    write_section(args.out)
    return 0


def summary(workload: str, concurrency: int, cpu: Mapping[str, list[float]],
            rps: Mapping[str, list[float]]) -> dict[str, Any]:
    """Each variant's medians, and the medians of its per-round ratios to the base."""
    def ratio(values: Mapping[str, list[float]], name: str) -> float:
        return statistics.median(x / b if b else 1.0
                                 for x, b in zip(values[name], values[BASE], strict=True))

    return {"workload": workload, "concurrency": concurrency, "cpu_ms": cpu, "rps": rps,
            "median_cpu": {n: statistics.median(v) for n, v in cpu.items()},
            "median_rps": {n: statistics.median(v) for n, v in rps.items()},
            "cpu_ratio": {n: ratio(cpu, n) for n in cpu},
            "rps_ratio": {n: ratio(rps, n) for n in rps}}


def server_lines(report: Mapping[str, Any]) -> list[str]:
    """A row per variant, a column per workload and concurrency."""
    names = list(report["variants"])
    rows = report["rows"]
    lines = [
        f"`{report['command']}`: each variant a gateway of its own (bench/serve_variant.py), "
        "pinned to core 0 in turn, caches off, upstream latency 0, the services and the load "
        "generator on core 1. CPU: the gateway's user + system time (/proc) per request, "
        f"and in brackets the median of the per-round ratios to `{BASE}` (below 1: cheaper); "
        "req/s: the median, and the median of the per-round ratios (above 1: faster).", "",
        "| variant | overrides | "
        + " | ".join(f"{r['workload']} c={r['concurrency']} CPU ms/req" for r in rows)
        + " | " + " | ".join(f"{r['workload']} c={r['concurrency']} req/s" for r in rows)
        + " |",
        "|---|---|" + "---|" * (2 * len(rows)),
    ]
    for n in names:
        config = orjson.dumps(report["variants"][n]).decode()
        lines.append(
            f"| {n} | `{config}` | "
            + " | ".join(f"{r['median_cpu'][n]:.3f} ({r['cpu_ratio'][n]:.2f})" for r in rows)
            + " | " + " | ".join(f"{r['median_rps'][n]:.0f} ({r['rps_ratio'][n]:.2f})"
                                 for r in rows) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
