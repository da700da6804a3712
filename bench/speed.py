"""The gateway's CPU per request on small queries, against an earlier commit's, in one run.

    python -m bench.speed --base c9450c9 [--head REV] [--rounds 5 --seconds 2]

Issue 19: `{ __typename }` (no upstream call), `{ product(id) { id name } }` (one call), the
product page (5 calls) and the deep query (10 calls), caches off, upstream latency 0, at
concurrency 1 and 32. Two gateways (this checkout, or `--head`, and `--base`, each commit
checked out into a temporary git worktree), each pinned to core 0 (`taskset`) and started
once, against one set of reference services pinned to core 1 with the load generator.
Each cell is measured on both in turns for `--rounds` rounds, alternating which goes
first, so both meet the same noise: the machine is shared, so only ratios within a round
mean much. CPU is the gateway
process's user + system time from /proc over the measured run, per request answered. The
report gives each side's median CPU and req/s and the median of the per-round ratios
(this commit over the base). Writes the "CPU per request" section of bench/RESULTS.md and
bench/speed.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.report import replace_section
from bench.run import BENCH, GATEWAY_CPU, OTHERS_CPU, cpu_seconds, loadgen, set_latency
from tests.harness import (
    Gateway,
    free_port,
    spawn,
    start_gateway,
    start_services,
    wait_healthy,
)

SECTION = "CPU per request"
WORKLOADS = "typename,product,product_page,deep"
# The default log level (info): the access line is part of a request's cost.
ENV = {"CACHE_ENABLED": "false", "RESPONSE_CACHE": "false"}


def cell(gateway: Gateway, workload: str, concurrency: int, seconds: float, warmup: float,
         index: int, requests: int | None) -> tuple[float, float]:
    """(CPU ms per request, req/s) of one measured run after a short warm-up."""
    loadgen(gateway, workload, concurrency, seconds=warmup, requests=requests,
            start_index=index)
    pid = gateway.process.proc.pid
    cpu0 = cpu_seconds(pid)
    res = loadgen(gateway, workload, concurrency, seconds=seconds, requests=requests,
                  start_index=index + 5_000)
    cpu1 = cpu_seconds(pid)
    if res["failures"] or res["responses_with_errors"]:
        raise RuntimeError(f"{workload} on {gateway.url}: {res}")
    return (cpu1 - cpu0) * 1000 / max(1, res["requests"]), res["rps"]


# Each floor (its option is --floor, --floor-reqwest, --floor-graphql): its settings for
# bench/floor_app.py, its name in the report, and the workloads it answers.
FLOOR_KINDS: dict[str, tuple[dict[str, str], str, tuple[str, ...]]] = {
    "floor": ({}, "aiohttp floor", ("typename", "product", "product_page", "deep")),
    "floor_reqwest": ({"FLOOR_CLIENT": "reqwest"}, "pyreqwest floor",
                      ("typename", "product", "product_page", "deep")),
    "floor_graphql": ({"FLOOR_GRAPHQL": "true"}, "minimal GraphQL floor", ("typename",)),
}


def start_floor(tmp: Path, services: Any, kind: str = "floor",
                cpus: str | None = GATEWAY_CPU) -> Gateway:
    """bench/floor_app.py of `kind` (FLOOR_KINDS) under uvicorn on core 0, as the gateway is
    started, against the same services."""
    port = free_port()
    process = spawn(["-m", "uvicorn", "bench.floor_app:app", "--host", "127.0.0.1",
                     "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                     "--no-access-log", "--log-level", "warning"],
                    {**services.gateway_env(), **FLOOR_KINDS[kind][0]},
                    tmp / f"{kind}.log", cpus)
    floor = Gateway(process=process, port=port)
    wait_healthy(floor.url + "/healthz", process.proc)
    return floor


def short(root: Path, rev: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", rev], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speed")
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--head", default=None,
                        help="a commit to measure in place of this checkout")
    parser.add_argument("--workloads", default=WORKLOADS)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="measured time per cell")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--smoke", action="store_true", help="a few requests per cell")
    parser.add_argument("--floor", action="store_true",
                        help="also measure each workload on a bare uvicorn app doing only "
                             "its HTTP work (bench/floor_app.py) in each round")
    parser.add_argument("--floor-reqwest", action="store_true",
                        help="and on the same app with pyreqwest for its upstream calls "
                             "(the bench extra)")
    parser.add_argument("--floor-graphql", action="store_true",
                        help="and `{ __typename }` through graphql-core with an access line "
                             "and two metrics, nothing else (bench/floor_app.py)")
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    floors_asked = [kind for kind in FLOOR_KINDS if getattr(args, kind)]
    root = BENCH.parent
    head, base = short(root, args.head or "HEAD"), short(root, args.base)
    dirty = args.head is None and bool(subprocess.run(
        ["git", "status", "--porcelain", "--", "app", "schema", "resolvers", "loaders"],
        cwd=root, check=True, capture_output=True, text=True).stdout.strip())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmpdir:
        tmp = Path(tmpdir)
        checkout = tmp / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(checkout), base],
                       cwd=root, check=True)
        head_root = None
        if args.head is not None:
            head_root = tmp / "head"
            subprocess.run(["git", "worktree", "add", "--detach", "-q", str(head_root), head],
                           cwd=root, check=True)
        started: list[Any] = []
        try:
            services = start_services(tmp, cpus=OTHERS_CPU)
            started.append(services)
            set_latency(services, 0)
            sides = {"head": start_gateway(tmp, services, env=ENV, cpus=GATEWAY_CPU,
                                           root=head_root),
                     "base": start_gateway(tmp, services, env=ENV, cpus=GATEWAY_CPU,
                                           root=checkout)}
            started.extend(sides.values())
            for kind in floors_asked:
                sides[kind] = start_floor(tmp, services, kind)
                started.append(sides[kind])
            index = 0
            for workload in args.workloads.split(","):
                for concurrency in map(int, args.concurrency.split(",")):
                    order = ["head", "base", *(kind for kind in floors_asked
                                               if workload in FLOOR_KINDS[kind][2])]
                    cpu: dict[str, list[float]] = {side: [] for side in order}
                    rps: dict[str, list[float]] = {side: [] for side in order}
                    requests = 4 * concurrency if args.smoke else None
                    for r in range(args.rounds):
                        for side in (order if r % 2 == 0 else order[::-1]):
                            ms, per_s = cell(sides[side], workload, concurrency, args.seconds,
                                             args.warmup, index, requests)
                            cpu[side].append(ms)
                            rps[side].append(per_s)
                        index += 10_000
                    # (/proc counts CPU in clock ticks: a smoke cell may show none.)
                    ratios = [h / b if b else 1.0
                              for h, b in zip(cpu["head"], cpu["base"], strict=True)]
                    rps_ratios = [h / b if b else 1.0
                                  for h, b in zip(rps["head"], rps["base"], strict=True)]
                    row = {"workload": workload, "concurrency": concurrency,
                           "cpu_ms": cpu, "rps": rps,
                           "median_head": statistics.median(cpu["head"]),
                           "median_base": statistics.median(cpu["base"]),
                           "rps_head": statistics.median(rps["head"]),
                           "rps_base": statistics.median(rps["base"]),
                           "ratio": statistics.median(ratios), "ratios": ratios,
                           "rps_ratio": statistics.median(rps_ratios)}
                    for side in FLOOR_KINDS:
                        if side in cpu:
                            row[f"{side}_ms"] = statistics.median(cpu[side])
                            row[f"{side}_rps"] = statistics.median(rps[side])
                    rows.append(row)
                    print(f"{workload:13} c={concurrency:<3} head {row['median_head']:.3f} ms, "
                          f"base {row['median_base']:.3f} ms, CPU ratio {row['ratio']:.3f}, "
                          f"req/s ratio {row['rps_ratio']:.2f}", flush=True)
        finally:
            for process in reversed(started):
                process.stop()
            for where in (checkout, head_root):
                if where is not None:
                    subprocess.run(["git", "worktree", "remove", "--force", str(where)],
                                   cwd=root, check=False)
    report = {"head": head + ("+changes" if dirty else ""), "base": base,
              "rounds": args.rounds, "seconds": args.seconds, "rows": rows}
    (args.out / "speed.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    command = (f"python -m bench.speed --base {args.base} "
               + (f"--head {args.head} " if args.head else "")
               + f"--workloads {args.workloads} "
               f"--concurrency {args.concurrency} --rounds {args.rounds} "
               f"--seconds {args.seconds:g}" + (" --smoke" if args.smoke else "")
               + "".join(f" --{kind.replace('_', '-')}" for kind in floors_asked))
    lines = [
        f"`{command}` (`make bench-speed`): {report['head']} against {base}, caches off, "
        "upstream latency 0, each gateway alone on core 0 in turn, the services and the load "
        f"generator on core 1; {args.rounds} rounds of {args.seconds:g} s per cell, "
        "alternating which side goes first. CPU: the gateway's user + system time (/proc) "
        "per request. Ratios: the median of the per-round ratios, this commit over the base "
        "(CPU below 1 and req/s above 1: this commit is cheaper).", "",
        "| workload | conc. | CPU ms/req (this) | CPU ms/req (base) | CPU ratio | "
        "per-round CPU ratios | req/s (this) | req/s (base) | req/s ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['workload']} | {row['concurrency']} | {row['median_head']:.3f} | "
            f"{row['median_base']:.3f} | {row['ratio']:.3f} | "
            + ", ".join(f"{x:.2f}" for x in row["ratios"])
            + f" | {row['rps_head']:.0f} | {row['rps_base']:.0f} | {row['rps_ratio']:.2f} |")
    floors = [row for row in rows if "floor_ms" in row or "floor_reqwest_ms" in row]
    if floors:
        measured = [side for side in ("floor", "floor_reqwest") if f"{side}_ms" in floors[0]]
        names = {side: name for side, (_, name, _) in FLOOR_KINDS.items()}
        lines += ["", "The floors (`bench/floor_app.py`: uvicorn with httptools and uvloop and "
                  "an app with no GraphQL, middleware, logging, metrics, timeouts or retries; "
                  "for `{ __typename }` it answers the same bytes, for the others it makes the "
                  "same upstream calls (with one aiohttp session, or pyreqwest's client), "
                  "decodes them with orjson and builds the same data by hand: "
                  "tests/bench/test_floor_app.py checks it answers the gateway's data), "
                  "measured in the same rounds:", "",
                  "| workload | conc. | "
                  + " | ".join(f"{names[side]} CPU ms/req | {names[side]} req/s | "
                               f"this commit over the {names[side]}" for side in measured)
                  + " |", "|---|---|" + "---|---|---|" * len(measured)]
        for row in floors:
            cells = []
            for side in measured:
                ms = row[f"{side}_ms"]
                # (/proc counts in clock ticks: a smoke cell may show none.)
                over = f"{row['median_head'] / ms:.2f}x" if ms else "n/a"
                cells.append(f"{ms:.3f} | {row[f'{side}_rps']:.0f} | {over}")
            lines.append(f"| {row['workload']} | {row['concurrency']} | "
                         + " | ".join(cells) + " |")
    minimal = [row for row in rows if "floor_graphql_ms" in row]
    if minimal:
        lines += ["", "The minimal GraphQL floor (`--floor-graphql`: bench/floor_app.py answers "
                  "`{ __typename }` through graphql-core's `execute` on the gateway's schema, "
                  "the document from a dict, with one JSON access line and a counter and a "
                  "histogram, and nothing else):", "",
                  "| conc. | CPU ms/req | req/s | this commit over it |", "|---|---|---|---|"]
        lines += [f"| {row['concurrency']} | {row['floor_graphql_ms']:.3f} | "
                  f"{row['floor_graphql_rps']:.0f} | "
                  + (f"{row['median_head'] / row['floor_graphql_ms']:.2f}x |"
                     if row["floor_graphql_ms"] else "n/a |") for row in minimal]
    replace_section(args.out / "RESULTS.md", SECTION, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
