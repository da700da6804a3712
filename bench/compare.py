"""The gateway's CPU per request against an earlier commit's, measured in turns in one run.

    python -m bench.compare --base 2269192          # cold deep query and product page
    python -m bench.compare --base REV --modes cold,warm --rounds 7

The earlier commit is checked out into a temporary git worktree; both gateways run against
the same reference services on core 0, one at a time, and the load generator on core 1 runs
each cell on one then the other, alternating which goes first, for `--rounds` rounds. The
machine's speed drifts over minutes, so only the ratio within a round means anything: the
report gives the median of the per-round ratios (this commit's CPU ms/request over the
base's), with each side's median CPU. Writes the "CPU against an earlier commit" section of
bench/RESULTS.md and bench/compare.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.checkout import checkout, short
from bench.report import replace_section
from bench.run import (
    BENCH,
    GATEWAY_CPU,
    MODES,
    OTHERS_CPU,
    WORKING_SET,
    cpu_seconds,
    fill,
    loadgen,
    set_latency,
)
from tests.harness import Gateway, start_gateway, start_services

SECTION = "CPU against an earlier commit"


def cell(gateway: Gateway, mode: str, workload: str, concurrency: int, seconds: float,
         index: int) -> float:
    """CPU ms per request of one measured run (after a warm-up, or a cache-filling pass)."""
    cycle = None
    if mode == "cold":
        loadgen(gateway, workload, concurrency, seconds=1.0, requests=None, start_index=index)
    else:
        cycle = WORKING_SET
        fill(gateway, workload, concurrency, index, cycle)
    pid = gateway.process.proc.pid
    cpu0 = cpu_seconds(pid)
    res = loadgen(gateway, workload, concurrency, seconds=seconds, requests=None,
                  start_index=index, cycle=cycle)
    cpu1 = cpu_seconds(pid)
    if res["failures"] or res["responses_with_errors"]:
        raise RuntimeError(f"{workload} on {gateway.url}: {res}")
    return (cpu1 - cpu0) * 1000 / max(1, res["requests"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare")
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--workloads", default="deep,product_page")
    parser.add_argument("--modes", default="cold")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args()
    root = BENCH.parent
    head = short("HEAD")
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "app", "schema",
                                 "resolvers", "loaders"], cwd=root, check=True,
                                capture_output=True, text=True).stdout.strip())
    base = short(args.base)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmpdir, \
            checkout(base, Path(tmpdir) / "base") as earlier:
        tmp = Path(tmpdir)
        services = start_services(tmp, cpus=OTHERS_CPU)
        try:
            set_latency(services, 0)
            index = 0
            for mode in args.modes.split(","):
                env = {"CACHE_ENABLED": "false", **MODES[mode]}
                sides = {
                    "head": start_gateway(tmp, services, env=env, cpus=GATEWAY_CPU),
                    "base": start_gateway(tmp, services, env=env, cpus=GATEWAY_CPU,
                                          root=earlier),
                }
                try:
                    for workload in args.workloads.split(","):
                        for concurrency in map(int, args.concurrency.split(",")):
                            cpu: dict[str, list[float]] = {"head": [], "base": []}
                            for r in range(args.rounds):
                                order = ("head", "base") if r % 2 == 0 else ("base", "head")
                                for side in order:
                                    cpu[side].append(cell(sides[side], mode, workload,
                                                          concurrency, args.seconds, index))
                                    index += 10_000
                            ratios = [h / b for h, b in zip(cpu["head"], cpu["base"],
                                                            strict=True)]
                            row = {"mode": mode, "workload": workload,
                                   "concurrency": concurrency, "cpu_ms": cpu,
                                   "median_head": statistics.median(cpu["head"]),
                                   "median_base": statistics.median(cpu["base"]),
                                   "ratio": statistics.median(ratios), "ratios": ratios}
                            results.append(row)
                            print(f"{mode:5} {workload:13} c={concurrency:<3} "
                                  f"head {row['median_head']:.2f} ms, base "
                                  f"{row['median_base']:.2f} ms, ratio {row['ratio']:.3f}",
                                  flush=True)
                finally:
                    for gateway in sides.values():
                        gateway.stop()
        finally:
            services.stop()
    report = {"head": head + ("+changes" if dirty else ""), "base": base,
              "rounds": args.rounds, "seconds": args.seconds, "results": results}
    (args.out / "compare.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    command = (f"python -m bench.compare --base {args.base} --modes {args.modes} "
               f"--workloads {args.workloads} --concurrency {args.concurrency} "
               f"--rounds {args.rounds} --seconds {args.seconds}")
    lines = [
        f"`{command}`: {report['head']} against {base}, each cell measured on both in turns "
        f"({args.rounds} rounds of {args.seconds:g} s, alternating which goes first), "
        "upstream latency 0, the gateway alone on core 0. The ratio is the median of the "
        "per-round ratios of CPU ms/request (below 1: this commit is cheaper).", "",
        "| mode | workload | concurrency | CPU ms/req (this) | CPU ms/req (base) | ratio | "
        "per-round ratios |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results:
        lines.append(
            f"| {row['mode']} | {row['workload']} | {row['concurrency']} | "
            f"{row['median_head']:.2f} | {row['median_base']:.2f} | {row['ratio']:.3f} | "
            + ", ".join(f"{r:.2f}" for r in row["ratios"]) + " |")
    replace_section(args.out / "RESULTS.md", SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()
