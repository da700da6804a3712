"""What idling costs the next burst of work on this machine, without the gateway.

At concurrency 1 with injected latency, the gateway idles between the dependent upstream
rounds of a query, and its CPU per deep query about doubles (bench/RESULTS.md, "Where a
cold request's time goes"). This probe shows the cause is the machine, not the gateway: a
fixed unit of pure-Python work (build 300 small objects from dicts and encode them with
orjson, the shape of the gateway's work) runs on the gateway's core under uvloop, back to
back or after each gap of idle time, in alternating rounds. It reports the median time of
the unit after each kind of gap and its ratio to back to back. Writes the Idle penalty
section of bench/RESULTS.md and bench/idle.json.

    python -m bench.idle [--rounds 5] [--units 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.report import replace_section
from bench.run import BENCH, GATEWAY_CPU
from tests.harness import pinned

# (label, gap in seconds, busy): busy gaps spin on the clock instead of sleeping.
GAPS: tuple[tuple[str, float, bool], ...] = (
    ("back to back", 0.0, False),
    ("after 0.2 ms idle", 0.0002, False),
    ("after 1 ms idle", 0.001, False),
    ("after 5 ms idle", 0.005, False),
    ("after 20 ms idle", 0.020, False),
    ("after 5 ms busy-waiting", 0.005, True),
)
DATA: list[dict[str, Any]] = [
    {"id": f"p{i}", "name": f"Product {i}", "price_cents": i * 100, "currency": "EUR",
     "reviews": [{"id": f"r{i}-{j}", "rating": j % 5 + 1, "body": "Fine."} for j in range(5)]}
    for i in range(300)]


def unit() -> bytes:
    out = []
    for item in DATA:
        out.append({"id": item["id"], "name": item["name"],
                    "price": {"amount": item["price_cents"], "currency": item["currency"]},
                    "reviews": [{"id": r["id"], "rating": r["rating"]} for r in item["reviews"]]})
    return orjson.dumps(out)


async def cell(gap: float, busy: bool, units: int) -> list[float]:
    took = []
    for _ in range(units):
        started = time.perf_counter()
        unit()
        took.append(time.perf_counter() - started)
        if busy:
            until = time.perf_counter() + gap
            while time.perf_counter() < until:
                pass
        else:
            await asyncio.sleep(gap)  # 0: one turn of the loop, as between requests
    return took


async def probe(rounds: int, units: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {label: [] for label, _, _ in GAPS}
    for _ in range(rounds):
        for label, gap, busy in GAPS:
            samples[label] += await cell(gap, busy, units)
    return samples


def measure(rounds: int, units: int) -> dict[str, Any]:
    """Run the probe in a child pinned to the gateway's core; returns its figures."""
    out = subprocess.run(
        [*pinned(GATEWAY_CPU), sys.executable, "-m", "bench.idle", "--child",
         "--rounds", str(rounds), "--units", str(units)],
        check=True, capture_output=True, cwd=BENCH.parent, stdin=subprocess.DEVNULL,
        timeout=600)
    result: dict[str, Any] = orjson.loads(out.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--units", type=int, default=100, help="work units per gap and round")
    parser.add_argument("--out", type=Path, default=BENCH)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        samples = uvloop.run(probe(args.rounds, args.units))
        medians = {label: statistics.median(s) * 1000 for label, s in samples.items()}
        sys.stdout.write(orjson.dumps({"median_ms": medians}).decode() + "\n")
        return 0
    result = measure(args.rounds, args.units)
    medians = result["median_ms"]
    base = medians["back to back"]
    result["ratio"] = {label: ms / base for label, ms in medians.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "idle.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    rows = [f"| {label} | {ms:.3f} | {ms / base:.2f}x |" for label, ms in medians.items()]
    body = "\n".join([
        f"`python -m bench.idle` ({args.rounds} alternating rounds of {args.units} units per "
        "gap, on the gateway's core): the median time of one fixed unit of pure-Python work "
        "(300 objects built from dicts and encoded with orjson) after each kind of gap.",
        "",
        "| the unit runs | median ms | against back to back |",
        "|---|---|---|",
        *rows,
        "",
        "The same instructions take longer after the core has waited for milliseconds, and "
        "the gateway's work between the dependent upstream rounds of a query at 5 ms latency "
        "pays this on every round. Busy-waiting pays it too, which points at caches refilled "
        "after other tenants' work rather than at the core's power states (not proven).",
    ])
    replace_section(args.out / "RESULTS.md", "Idle penalty", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
