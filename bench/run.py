"""`make bench`: measure the gateway against the physical floor of its upstream round trips.

The reference services run in one process and the load generator in another, both pinned to
core 1; the gateway runs alone on core 0, so figures are per gateway core. For each workload,
upstream latency and concurrency it records throughput, latency percentiles, upstream
requests per query (from the services' /_stats), gateway CPU time per request and peak RSS,
and it reports each p50 as the floor (dependent upstream rounds x injected latency) plus the
gateway's overhead. Writes bench/RESULTS.md and bench/results.json.

    python -m bench.run              # the full matrix, about 3 minutes
    python -m bench.run --smoke      # a few requests per cell, to keep the harness working
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.report import section
from bench.workloads import WORKLOADS, unbatched_lookups
from tests.harness import (
    SERVICE_NAMES,
    Gateway,
    Services,
    http,
    pinned,
    sample_total,
    start_gateway,
    start_services,
)

BENCH = Path(__file__).resolve().parent
GATEWAY_CPU = "0"
OTHERS_CPU = "1"  # the services and the load generator
PROBE_LATENCY_MS = 40  # injected to count dependent rounds: large against noise
WORKING_SET = 100  # distinct requests a warm run repeats
# Gateway settings per mode: cold has no cache at all; warm reads the entity cache after a
# pass over the working set; response adds the whole-response cache.
MODES = {
    "cold": {"CACHE_ENABLED": "false"},
    "warm": {"CACHE_ENABLED": "true"},
    "response": {"CACHE_ENABLED": "true", "RESPONSE_CACHE": "true"},
}
# The sections of bench/RESULTS.md that other commands write.
OTHER_SECTIONS = ("Idle penalty", "Cross-replica invalidation",
                  "Redis Cluster: the shared level's cost", "Scale-out", "Resilience",
                  "Tracing", "Soak", "CPU against an earlier commit", "Incremental delivery",
                  "Response cache hit ratio", "Redis stalled",
                  "Redis stalled, before the guard (6ad9fba)", "History checker",
                  "No level barrier", "CPU per request", "CPU per request: each change",
                  "Upstream client and server settings")
VERSIONS = ("strawberry-graphql", "graphql-core", "aiohttp", "aiodataloader", "uvicorn",
            "starlette", "orjson", "uvloop", "httptools")


@dataclass
class Row:
    mode: str
    workload: str
    latency_ms: int
    concurrency: int
    requests: int
    failures: int
    responses_with_errors: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    upstream_per_query: float
    upstream_by_service: dict[str, float]
    cpu_ms_per_request: float
    gc_ms_per_request: float  # of it, the cycle collector's pauses
    peak_rss_mb: float
    floor_ms: float | None
    overhead_ms: float | None
    # The services' own time answering, per request (their /_timing, injected latency
    # excluded): at concurrency 1 it is on the critical path, like the gateway's CPU.
    services_ms: float = 0.0
    first_error: str | None = None  # what the first failed or erroneous answer said


# -- process measurements ------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; after the ")" they are 12th and 13th.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gc_seconds(gateway: Gateway) -> float:
    """The gateway's cycle-collector pauses so far (its gateway_gc_pause_seconds)."""
    _, _, text = http("GET", gateway.url + "/metrics")
    return sample_total(text, "gateway_gc_pause_seconds_sum")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the services' knobs -------------------------------------------------------------------------
def set_latency(services: Services, latency_ms: float) -> None:
    for name in SERVICE_NAMES:
        services.set_faults(name, latency_ms=latency_ms, jitter_ms=0, error_rate=0.0,
                            hang_rate=0.0, rate_limit_rps=None)


def upstream_counts(services: Services) -> Counter[str]:
    counts: Counter[str] = Counter()
    for name, stats in services.all_stats().items():
        counts[name] = sum(stats["requests"].values())
    return counts


# -- load ----------------------------------------------------------------------------------------
def loadgen(gateway: Gateway, workload: str, concurrency: int, *, seconds: float,
            requests: int | None, start_index: int, cycle: int | None = None) -> dict[str, Any]:
    cmd = [*pinned(OTHERS_CPU), sys.executable, "-m", "bench.loadgen",
           gateway.url + "/graphql", workload, "--concurrency", str(concurrency),
           "--seconds", str(seconds), "--start-index", str(start_index)]
    if requests is not None:
        cmd += ["--requests", str(requests)]
    if cycle is not None:
        cmd += ["--cycle", str(cycle)]
    out = subprocess.run(cmd, check=True, capture_output=True, cwd=BENCH.parent,
                         stdin=subprocess.DEVNULL, timeout=seconds + 120)
    return orjson.loads(out.stdout)


def one_response(gateway: Gateway, workload: str, index: int) -> dict[str, Any]:
    query, variables, headers = WORKLOADS[workload].make(index)
    status, _, body = http("POST", gateway.url + "/graphql",
                           {"query": query, "variables": variables}, headers)
    assert status == 200 and not body.get("errors"), body
    return body["data"]


def measure_rounds(gateway: Gateway, services: Services, workload: str) -> int:
    """Dependent upstream rounds of one request: the extra time a large injected latency
    adds, divided by that latency. The floor at latency L is rounds x L."""
    timings = {}
    for latency in (0, PROBE_LATENCY_MS):
        set_latency(services, latency)
        res = loadgen(gateway, workload, 1, seconds=30, requests=5, start_index=10_000)
        timings[latency] = res["p50_ms"]
    set_latency(services, 0)
    return round((timings[PROBE_LATENCY_MS] - timings[0]) / PROBE_LATENCY_MS)


def fill(gateway: Gateway, workload: str, concurrency: int, index: int, cycle: int) -> None:
    """One pass over a working set fills the caches; the measured run then repeats it."""
    loadgen(gateway, workload, concurrency, seconds=60, requests=cycle, start_index=index,
            cycle=cycle)


def run_cell(gateway: Gateway, services: Services, mode: str, workload: str, latency: int,
             concurrency: int, *, seconds: float, warmup: float, smoke: bool,
             rounds: dict[str, int], index: int) -> tuple[Row, int]:
    n = 4 * concurrency if smoke else None
    if mode == "cold":
        warm = loadgen(gateway, workload, concurrency, seconds=warmup, requests=n,
                       start_index=index)
        index, cycle = warm["next_index"], None
    else:
        cycle = min(WORKING_SET, n) if n else WORKING_SET
        fill(gateway, workload, concurrency, index, cycle)
    services.reset_stats()
    gc0 = gc_seconds(gateway)
    cpu0 = cpu_seconds(gateway.process.proc.pid)
    res = loadgen(gateway, workload, concurrency, seconds=seconds, requests=n,
                  start_index=index, cycle=cycle)
    cpu1 = cpu_seconds(gateway.process.proc.pid)
    gc1 = gc_seconds(gateway)
    counts = upstream_counts(services)
    done = max(1, res["requests"])
    services_ms = services.handling_ms() / done
    # The floor is the cold path's: a cache answers below it.
    floor = rounds[workload] * latency if mode == "cold" and workload in rounds else None
    row = Row(
        mode=mode, workload=workload, latency_ms=latency, concurrency=concurrency,
        requests=res["requests"], failures=res["failures"],
        responses_with_errors=res["responses_with_errors"], rps=res["rps"],
        first_error=res["first_error"],
        p50_ms=res["p50_ms"], p95_ms=res["p95_ms"], p99_ms=res["p99_ms"],
        upstream_per_query=sum(counts.values()) / done,
        upstream_by_service={k: v / done for k, v in sorted(counts.items()) if v},
        cpu_ms_per_request=(cpu1 - cpu0) * 1000 / done,
        gc_ms_per_request=(gc1 - gc0) * 1000 / done,
        peak_rss_mb=peak_rss_mb(gateway.process.proc.pid),
        floor_ms=floor,
        overhead_ms=None if floor is None else res["p50_ms"] - floor,
        services_ms=services_ms,
    )
    return row, res["next_index"] if cycle is None else index + cycle


# -- the cache ratios, interleaved -------------------------------------------------------------
INTERLEAVED_LATENCY_MS = 5  # the targets are measured at 5 ms
INTERLEAVED_ROUNDS = 3


def interleaved_ratios(tmp: Path, services: Services, workload: str, *, seconds: float,
                       smoke: bool) -> dict[str, Any]:
    """Cold, warm and response-cache throughput at concurrency 32 from three gateways run
    in turns, a short cell each, and the median of each: the machine's speed drifts over
    minutes, so ratios of cells measured minutes apart (the matrix's) move with it."""
    gateways = {mode: start_gateway(tmp, services, cpus=GATEWAY_CPU,
                                    env={"LOG_LEVEL": "warning", **env})
                for mode, env in MODES.items()}
    n = 4 * 32 if smoke else None
    rps: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        set_latency(services, INTERLEAVED_LATENCY_MS)
        index = 50_000
        for _ in range(1 if smoke else INTERLEAVED_ROUNDS):
            for mode, gateway in gateways.items():
                cycle = None if mode == "cold" else WORKING_SET
                if cycle is not None:  # as in the matrix
                    fill(gateway, workload, 32, index, cycle)
                res = loadgen(gateway, workload, 32, seconds=seconds, requests=n,
                              start_index=index, cycle=cycle)
                rps[mode].append(res["rps"])
            index += 10_000
    finally:
        set_latency(services, 0)
        for gateway in gateways.values():
            gateway.stop()
    medians = {mode: statistics.median(values) for mode, values in rps.items()}
    return {"workload": workload, "latency_ms": INTERLEAVED_LATENCY_MS, "seconds": seconds,
            "rps": rps,
            "median_rps": medians,
            "warm_ratio": medians["warm"] / medians["cold"] if medians["cold"] else 0.0,
            "response_ratio": medians["response"] / medians["cold"] if medians["cold"] else 0.0}


# -- profile -------------------------------------------------------------------------------------
def profile(gateway: Gateway, seconds: float, out: Path) -> list[tuple[str, float]]:
    """Sample the gateway with py-spy under deep-query load; keep the collapsed stacks and
    return the functions with the most own time."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = out / "profile-deep.txt"
    rec = subprocess.Popen(
        [spy, "record", "--pid", str(gateway.process.proc.pid), "--duration", str(int(seconds)),
         "--format", "raw", "--output", str(raw), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    loadgen(gateway, "deep", 32, seconds=seconds + 1, requests=None, start_index=0)
    rec.wait(timeout=60)
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines() if raw.exists() else ():
        stack, _, count = line.rpartition(" ")
        frame = stack.rsplit(";", 1)[-1]
        own[frame] += int(count)
        total += int(count)
    return [(frame, 100 * n / total) for frame, n in own.most_common(15)] if total else []


# -- report --------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    versions = {}
    for name in VERSIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "-"
    return {"cpu": model, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "kernel": platform.release(), **versions}


def write_report(out: Path, command: str, rows: list[Row], meta: dict[str, Any]) -> None:
    (out / "results.json").write_bytes(
        orjson.dumps({"command": command, **meta, "rows": [asdict(r) for r in rows]},
                     option=orjson.OPT_INDENT_2)
    )
    lines = [
        "# Benchmark results", "",
        f"Command: `{command}` ({meta['date']}, {meta['duration_s']:.0f} s).", "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in meta["machine"].items()) + ".", "",
        "The gateway runs alone on core 0 (`taskset`); the reference services and the load "
        "generator share core 1. Each cell: a warm-up, then a measured run at fixed "
        "concurrency over keep-alive connections. `upstream/q` is every service request "
        "counted by `/_stats` divided by the queries answered; `unbatched` is the lookups a "
        "gateway without batching would make for the same result (one per entity or list "
        "reference); `floor` is the dependent upstream rounds times the injected latency, and "
        "`overhead` is p50 minus the floor. `GC ms/req`: the part of the CPU spent in pauses "
        "of Python's cycle collector (the gateway's `gateway_gc_pause_seconds`).", "",
        "Dependent upstream rounds, measured by injecting "
        f"{PROBE_LATENCY_MS} ms: " + ", ".join(f"{k} {v}" for k, v in meta["rounds"].items())
        + ".", "",
        "| mode | workload | latency | conc. | req/s | p50 ms | p95 ms | p99 ms | upstream/q "
        "| unbatched | CPU ms/req | GC ms/req | peak RSS MB | floor ms | overhead ms | failed "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.mode} | {r.workload} | {r.latency_ms} | {r.concurrency} | {r.rps:.0f} | "
            f"{r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.p99_ms:.1f} | {r.upstream_per_query:.2f} | "
            f"{meta['unbatched'].get(r.workload, '-')} | {r.cpu_ms_per_request:.2f} | "
            f"{r.gc_ms_per_request:.2f} | "
            f"{r.peak_rss_mb:.0f} | {'-' if r.floor_ms is None else f'{r.floor_ms:.0f}'} | "
            f"{'-' if r.overhead_ms is None else f'{r.overhead_ms:.1f}'} | {r.failures} | "
            f"{r.responses_with_errors} |"
        )
    split = [r for r in rows if r.mode == "cold" and r.concurrency == 1 and r.floor_ms is not None]
    if split:
        lines += ["", "## Where a cold request's time goes, at concurrency 1", "",
                  "One request at a time, so nearly everything is on its critical path: "
                  "p50 = the floor + the services' own work (their `/_timing`, injected "
                  "latency excluded) + the gateway's CPU (`/proc`, user and kernel) + the "
                  "rest (the services' HTTP server and kernel time outside their handlers, "
                  "loopback, wake-ups, the load generator's share). The services' work can "
                  "overlap the gateway's when a level's calls run in parallel, so the rest "
                  "may come out slightly negative. Means per request over the measured run, "
                  "except p50. The gateway's CPU grows with the latency: see the Idle "
                  "penalty section.", "",
                  "| workload | latency | p50 ms | floor ms | services ms | gateway CPU ms "
                  "| rest ms |", "|---|---|---|---|---|---|---|"]
        for r in split:
            floor = r.floor_ms or 0.0
            rest = r.p50_ms - floor - r.services_ms - r.cpu_ms_per_request
            lines.append(f"| {r.workload} | {r.latency_ms} | {r.p50_ms:.1f} | {floor:.0f} | "
                         f"{r.services_ms:.1f} | {r.cpu_ms_per_request:.1f} | {rest:.1f} |")
    lines += ["", "## Caches against cold, at concurrency 32", "",
              "| workload | latency | cold req/s | warm req/s | warm/cold | response req/s "
              "| response/cold | cold upstream/q | warm upstream/q | response upstream/q |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    cells = {(r.mode, r.workload, r.latency_ms, r.concurrency): r for r in rows}
    for (mode, workload, latency, conc), cold in cells.items():
        if mode != "cold" or conc != 32:
            continue
        warm = cells.get(("warm", workload, latency, conc))
        resp = cells.get(("response", workload, latency, conc))

        def ratio(other: Row | None, base: Row = cold) -> str:
            return f"{other.rps / base.rps:.1f}x" if other and base.rps else "-"

        def rps(row: Row | None) -> str:
            return f"{row.rps:.0f}" if row else "-"

        def upq(row: Row | None) -> str:
            return f"{row.upstream_per_query:.2f}" if row else "-"

        lines.append(f"| {workload} | {latency} | {rps(cold)} | {rps(warm)} | {ratio(warm)} | "
                     f"{rps(resp)} | {ratio(resp)} | {upq(cold)} | {upq(warm)} | {upq(resp)} |")
    inter = meta.get("interleaved")
    if inter:
        med = inter["median_rps"]
        lines += ["", "## Cache ratios, interleaved", "",
                  f"The {inter['workload']} query at concurrency 32 and "
                  f"{inter['latency_ms']} ms latency (the targets' setting): a cold, a warm "
                  f"and a response-cache gateway run in turns, {inter['seconds']:g} s each, "
                  f"{len(inter['rps']['cold'])} rounds, the median of each. Cells minutes "
                  "apart (the table above) move with the machine's speed; these do not.", "",
                  "| mode | req/s per round | median req/s | against cold |", "|---|---|---|---|"]
        for mode, values in inter["rps"].items():
            against = med[mode] / med["cold"] if med["cold"] else 0.0
            lines.append(f"| {mode} | {', '.join(f'{v:.0f}' for v in values)} | "
                         f"{med[mode]:.0f} | {against:.1f}x |")
    if meta.get("profile"):
        lines += ["", "## Profile: deep query, cold, concurrency 32, no injected latency", "",
                  "Own time of the hottest functions (py-spy samples of the gateway; the "
                  "collapsed stacks are in `bench/profile-deep.txt`):", "",
                  "| function | own time |", "|---|---|"]
        lines += [f"| `{frame}` | {share:.1f}% |" for frame, share in meta["profile"]]
    # Other commands own the other sections (make soak, bench-resilience, ...): keep them.
    previous = out / "RESULTS.md"
    text = previous.read_text() if previous.exists() else ""
    kept = "".join(section(text, title) for title in OTHER_SECTIONS)
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n" + kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--smoke", action="store_true", help="a few requests per cell")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per cell")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--latencies", default="0,5")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--profile", action="store_true", help="sample the gateway with py-spy")
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.monotonic()
    workloads = args.workloads.split(",")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    services = start_services(tmp, cpus=OTHERS_CPU)
    rows: list[Row] = []
    meta: dict[str, Any] = {"machine": machine(), "rounds": {}, "unbatched": {}}
    try:
        for mode in args.modes.split(","):
            env = MODES[mode]
            gateway = start_gateway(tmp, services, cpus=GATEWAY_CPU,
                                    env={"LOG_LEVEL": "warning", **env})
            try:
                for w in workloads:
                    if mode == "cold" and not WORKLOADS[w].writes:
                        meta["unbatched"][w] = unbatched_lookups(one_response(gateway, w, 1))
                        if not args.smoke:
                            meta["rounds"][w] = measure_rounds(gateway, services, w)
                index = 0
                for latency in map(int, args.latencies.split(",")):
                    set_latency(services, latency)
                    for w in workloads:
                        for c in map(int, args.concurrency.split(",")):
                            row, index = run_cell(
                                gateway, services, mode, w, latency, c, seconds=args.seconds,
                                warmup=args.warmup, smoke=args.smoke, rounds=meta["rounds"],
                                index=index,
                            )
                            rows.append(row)
                            print(f"{mode:5} {w:16} {latency:>2} ms c={c:<3} "
                                  f"{row.rps:7.0f} req/s p50 {row.p50_ms:6.1f} ms "
                                  f"upstream/q {row.upstream_per_query:5.2f} "
                                  f"cpu {row.cpu_ms_per_request:5.2f} ms", flush=True)
                set_latency(services, 0)
                if args.profile and mode == "cold":
                    meta["profile"] = profile(gateway, 8, out)
            finally:
                gateway.stop()
        if "deep" in workloads and "cold" in args.modes:
            meta["interleaved"] = interleaved_ratios(tmp, services, "deep", seconds=2.0,
                                                     smoke=args.smoke)
    finally:
        services.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    meta["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta["duration_s"] = time.monotonic() - started
    write_report(out, command, rows, meta)
    print(f"wrote {out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
