"""A soak: the mix workload at concurrency 32 for ten minutes, sampling the gateway's RSS, to
show that per-request loaders and caches are released and memory stays flat.

The entity cache fills during the first minute (it is bounded: CACHE_MAX_ENTRIES), so
"flat" compares the RSS after that warm-up with the RSS at the end. Appends a section to
bench/RESULTS.md and writes bench/soak.json.

    python -m bench.soak [--minutes 10]        # make soak
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.report import replace_section
from bench.run import GATEWAY_CPU, OTHERS_CPU
from tests.harness import pinned, start_gateway, start_services

BENCH = Path(__file__).resolve().parent
SAMPLE_S = 10.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60
    warmup = min(60.0, seconds / 5)
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    services = start_services(tmp, cpus=OTHERS_CPU)
    gateway = start_gateway(tmp, services, cpus=GATEWAY_CPU, env={"LOG_LEVEL": "warning"})
    pid = gateway.process.proc.pid
    samples: list[tuple[float, float]] = []
    try:
        load = subprocess.Popen(
            [*pinned(OTHERS_CPU), sys.executable, "-m", "bench.loadgen",
             gateway.url + "/graphql", "mix", "--concurrency", "32", "--seconds", str(seconds)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=BENCH.parent,
        )
        started = time.monotonic()
        while load.poll() is None:
            samples.append((time.monotonic() - started, rss_mb(pid)))
            time.sleep(min(SAMPLE_S, max(0.5, seconds / 20)))
        out, _ = load.communicate()
        loadres = orjson.loads(out)
        samples.append((time.monotonic() - started, rss_mb(pid)))
    finally:
        gateway.stop()
        services.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    after_warmup = next(rss for t, rss in samples if t >= warmup)
    end = samples[-1][1]
    result = {"minutes": args.minutes, "requests": loadres["requests"],
              "failures": loadres["failures"], "rps": loadres["rps"],
              "rss_start_mb": samples[0][1], "rss_after_warmup_mb": after_warmup,
              "rss_end_mb": end, "rss_peak_mb": max(r for _, r in samples),
              "growth_after_warmup": end / after_warmup - 1, "samples": samples}
    (args.out / "soak.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    section = (
        f"`python -m bench.soak --minutes {args.minutes:g}` (make soak): the mix "
        f"at concurrency 32, entity cache on: {loadres['requests']} requests, "
        f"{loadres['failures']} failed, {loadres['rps']:.0f} req/s. Gateway RSS: "
        f"{samples[0][1]:.0f} MB at start, {after_warmup:.0f} MB after the {warmup:.0f} s "
        f"warm-up (the cache filling), {end:.0f} MB at the end "
        f"({result['growth_after_warmup']:+.1%} after warm-up), peak "
        f"{result['rss_peak_mb']:.0f} MB. Samples every {SAMPLE_S:.0f} s in bench/soak.json.\n"
    )
    replace_section(args.out / "RESULTS.md", "Soak", section)
    print(section.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
