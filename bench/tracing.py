"""What telemetry costs: the deep query's throughput and p50 with tracing off, with resolver
spans exported, and with every field traced, side by side in one run.

Each configuration gets a fresh gateway (cache off, so every query does the same work),
pinned to core 0; the services (0 ms latency: the gateway's own cost is what is measured),
an OTLP sink that accepts and discards spans, and the load on core 1. Configurations are run
in alternating rounds, so that the machine's drift hits them all alike. Writes the Tracing
section of bench/RESULTS.md and bench/tracing.json.

    python -m bench.tracing [--seconds 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.report import replace_section
from bench.run import GATEWAY_CPU, OTHERS_CPU, cpu_seconds, loadgen, set_latency
from tests.harness import (
    Services,
    free_port,
    http,
    spawn,
    start_gateway,
    start_services,
    wait_healthy,
)

BENCH = Path(__file__).resolve().parent
CONFIGS: dict[str, dict[str, str]] = {
    "off, every resolver timed": {"OTEL_TRACES_EXPORTER": "none", "RESOLVER_METRICS_RATIO": "1"},
    "off (default)": {"OTEL_TRACES_EXPORTER": "none"},
    "resolver spans, all exported": {"OTEL_TRACES_EXPORTER": "otlp"},
    "resolver spans, 10% exported (all recorded: failed kept)": {
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    "resolver spans, 10% recorded and exported": {
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "TRACES_KEEP_FAILED": "false"},
    "every field traced, all exported": {"OTEL_TRACES_EXPORTER": "otlp",
                                         "TRACE_ALL_FIELDS": "true"},
}


def cell(tmp: Path, services: Services, sink: str, env: dict[str, str], concurrency: int,
         seconds: float, warmup: float) -> dict[str, Any]:
    gateway = start_gateway(tmp, services, cpus=GATEWAY_CPU, env={
        "CACHE_ENABLED": "false", "LOG_LEVEL": "warning", "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
        # Costs, not deadlines, are measured: every field traced at c=32 queues for seconds.
        "REQUEST_DEADLINE_S": "60",
        **env})
    try:
        loadgen(gateway, "deep", concurrency, seconds=warmup, requests=None, start_index=0)
        cpu = cpu_seconds(gateway.process.proc.pid)
        res = loadgen(gateway, "deep", concurrency, seconds=seconds, requests=None,
                      start_index=0)
        cpu = cpu_seconds(gateway.process.proc.pid) - cpu
    finally:
        gateway.stop()
    assert res["failures"] == 0 and res["responses_with_errors"] == 0, res
    return {"rps": res["rps"], "p50_ms": res["p50_ms"],
            "cpu_ms_per_query": cpu * 1000 / res["requests"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=BENCH)
    parser.add_argument("--smoke", action="store_true",
                        help="a fraction of a second per cell, concurrency 1 (make test)")
    args = parser.parse_args(argv)
    levels = (1,) if args.smoke else (1, 32)
    warmup = 0.2 if args.smoke else 1.0
    if args.smoke:
        args.seconds, args.rounds = 0.3, 1
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tracing-"))
    services = start_services(tmp, cpus=OTHERS_CPU)
    port = free_port()
    sink_process = spawn(["-m", "bench.otlp_sink", str(port)], {}, tmp / "sink.log",
                          OTHERS_CPU)
    sink = f"http://127.0.0.1:{port}"
    samples: dict[str, dict[int, list[dict[str, Any]]]] = {
        label: {c: [] for c in levels} for label in CONFIGS}
    try:
        wait_healthy(sink + "/healthz", sink_process.proc)
        set_latency(services, 0)
        for _ in range(args.rounds):
            for concurrency in levels:
                for label, env in CONFIGS.items():
                    row = cell(tmp, services, sink, env, concurrency, args.seconds, warmup)
                    samples[label][concurrency].append(row)
                    print(label, concurrency, row, flush=True)
        exported = http("GET", sink + "/count")[2]["spans"]
    finally:
        sink_process.stop()
        services.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def median(label: str, c: int, key: str) -> float:
        return statistics.median(r[key] for r in samples[label][c])

    base = "off (default)"
    result = {"seconds": args.seconds, "rounds": args.rounds, "spans_exported": exported,
              "configs": {label: {str(c): {key: median(label, c, key)
                                           for key in ("rps", "p50_ms", "cpu_ms_per_query")}
                                   for c in levels} for label in CONFIGS}}
    (args.out / "tracing.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    lines = [
        f"`python -m bench.tracing --seconds {args.seconds:g} --rounds {args.rounds}` (make "
        "bench-tracing): the deep query (about 300 traced resolver calls, 10 batches, 10 "
        "upstream calls, ~330 spans a query with resolver spans, ~2,000 with every field), "
        "0 ms upstream latency, entity cache off, spans sent to an OTLP/HTTP sink on the "
        "other core; medians of the rounds, each configuration on a fresh gateway, in "
        "alternating order.", "",
        "| configuration | c=1 p50 ms | c=1 CPU ms/query | c=32 queries/s | c=32 CPU ms/query "
        "| c=32 throughput vs off |", "|---|---|---|---|---|---|"]
    for label in CONFIGS:
        if args.smoke:
            continue
        lines.append(
            f"| {label} | {median(label, 1, 'p50_ms'):.2f} | "
            f"{median(label, 1, 'cpu_ms_per_query'):.2f} | {median(label, 32, 'rps'):.0f} | "
            f"{median(label, 32, 'cpu_ms_per_query'):.2f} | "
            f"{median(label, 32, 'rps') / median(base, 32, 'rps'):.2f}x |")
    lines.append("")
    replace_section(args.out / "RESULTS.md", "Tracing", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
