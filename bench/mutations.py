"""Mutations through the plan: the gateway's CPU per mutation with the plan executor against
graphql-core's (the fallback), and the same selection as a query, in one run.

    python -m bench.mutations [--rounds 5 --seconds 1.5 --concurrency 1,8]

Issue 19 point 4: a mutation's payload is completed by the plan executor
(app/execution/executor.py); with PLAN_EXECUTOR=false the whole operation runs on
graphql-core's executor. Two gateways of this checkout, one with each setting, each pinned
to core 0 and measured in turns (alternating which goes first), against one set of
reference services with the load generator on core 1; caches off, latency 0.

Workloads (bench/workloads.py): `add_review`, an addReview whose payload reads the product
reviewed (its rating and 5 newest reviews with their authors), and `reviewed_query`, the same
product selection as a query. The reviews service keeps every review written, in memory:
each run adds a few thousand, spread over the products. Writes the "Mutations through the
plan" section of bench/RESULTS.md and bench/mutations.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.report import replace_section
from bench.run import BENCH, GATEWAY_CPU, OTHERS_CPU, set_latency
from bench.speed import cell
from tests.harness import start_gateway, start_services

SECTION = "Mutations through the plan"
WORKLOADS = "add_review,reviewed_query,add_review_deep,reviewed_deep_query"
PAIRS = (("add_review", "reviewed_query"), ("add_review_deep", "reviewed_deep_query"))
ENV = {"CACHE_ENABLED": "false", "RESPONSE_CACHE": "false"}
SIDES = {"plan": {}, "fallback": {"PLAN_EXECUTOR": "false"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mutations")
    parser.add_argument("--workloads", default=WORKLOADS)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="measured time per cell")
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--smoke", action="store_true", help="a few requests per cell")
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-mutations-") as tmpdir:
        tmp = Path(tmpdir)
        started: list[Any] = []
        try:
            services = start_services(tmp, cpus=OTHERS_CPU)
            started.append(services)
            set_latency(services, 0)
            gateways = {side: start_gateway(tmp, services, env={**ENV, **env},
                                            cpus=GATEWAY_CPU)
                        for side, env in SIDES.items()}
            started.extend(gateways.values())
            index = 0
            for workload in args.workloads.split(","):
                for concurrency in map(int, args.concurrency.split(",")):
                    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
                    rps: dict[str, list[float]] = {side: [] for side in SIDES}
                    requests = 4 * concurrency if args.smoke else None
                    for r in range(args.rounds):
                        order = list(SIDES) if r % 2 == 0 else list(reversed(SIDES))
                        for side in order:
                            # Each side its own indexes: no review written twice alike.
                            start = index + (0 if side == "plan" else 500_000)
                            ms, per_s = cell(gateways[side], workload, concurrency,
                                             args.seconds, args.warmup, start, requests)
                            cpu[side].append(ms)
                            rps[side].append(per_s)
                        index += 10_000
                    ratios = [f / p if p else 1.0
                              for f, p in zip(cpu["fallback"], cpu["plan"], strict=True)]
                    row = {"workload": workload, "concurrency": concurrency, "cpu_ms": cpu,
                           "rps": rps,
                           "plan": statistics.median(cpu["plan"]),
                           "fallback": statistics.median(cpu["fallback"]),
                           "rps_plan": statistics.median(rps["plan"]),
                           "rps_fallback": statistics.median(rps["fallback"]),
                           "ratio": statistics.median(ratios), "ratios": ratios}
                    rows.append(row)
                    print(f"{workload:15} c={concurrency:<3} plan {row['plan']:.3f} ms, "
                          f"fallback {row['fallback']:.3f} ms, "
                          f"fallback/plan {row['ratio']:.3f}", flush=True)
        finally:
            for process in reversed(started):
                process.stop()
    (args.out / "mutations.json").write_bytes(orjson.dumps(
        {"rounds": args.rounds, "seconds": args.seconds, "rows": rows},
        option=orjson.OPT_INDENT_2))
    command = (f"python -m bench.mutations --workloads {args.workloads} "
               f"--concurrency {args.concurrency} --rounds {args.rounds} "
               f"--seconds {args.seconds:g}" + (" --smoke" if args.smoke else ""))
    lines = [
        f"`{command}`: two gateways of this checkout, PLAN_EXECUTOR on (plan) and off "
        "(fallback: graphql-core's executor for the whole operation), caches off, upstream "
        "latency 0, each alone on core 0 in turn, the services and the load generator on "
        f"core 1; {args.rounds} rounds of {args.seconds:g} s per cell, alternating which "
        "side goes first. CPU: the gateway's user + system time (/proc) per request. "
        "`add_review`: addReview (5 upstream calls: the product checked, the review "
        "written, then the payload's product, its reviews, their authors), its payload "
        "`review { id product { S } }`; `reviewed_query`: `product(id) { S }` (3 calls), "
        "S the same selection (bench/workloads.py, REVIEWED: 5 reviews and their authors). "
        "`add_review_deep` and `reviewed_deep_query`: the same with a larger S "
        "(REVIEWED_DEEP: 10 reviews, their authors' 3 reviews each, those products' 2 "
        "reviews and their authors; about 140 objects, 6 calls as a query). Ratio: the "
        "median of the per-round ratios, fallback over plan.", "",
        "| workload | conc. | CPU ms/req (plan) | CPU ms/req (fallback) | fallback/plan | "
        "per-round ratios | req/s (plan) | req/s (fallback) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['workload']} | {row['concurrency']} | {row['plan']:.3f} | "
            f"{row['fallback']:.3f} | {row['ratio']:.3f} | "
            + ", ".join(f"{x:.2f}" for x in row["ratios"])
            + f" | {row['rps_plan']:.0f} | {row['rps_fallback']:.0f} |")
    by = {(row["workload"], row["concurrency"]): row for row in rows}
    lines.append("")
    lines.append("The mutation over the query with the same selection (CPU per request), and "
                 "the difference: the write, its product check and its evictions.")
    lines.append("")
    lines.append("| selection | conc. | plan | fallback | plan, ms more | fallback, ms more |")
    lines.append("|---|---|---|---|---|---|")
    for mutation_name, query_name in PAIRS:
        for concurrency in map(int, args.concurrency.split(",")):
            mutation = by.get((mutation_name, concurrency))
            query = by.get((query_name, concurrency))
            if mutation and query:
                lines.append(
                    f"| {query_name} | {concurrency} | "
                    f"{mutation['plan'] / query['plan']:.2f}x | "
                    f"{mutation['fallback'] / query['fallback']:.2f}x | "
                    f"{mutation['plan'] - query['plan']:.3f} | "
                    f"{mutation['fallback'] - query['fallback']:.3f} |")
    replace_section(args.out / "RESULTS.md", SECTION, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
