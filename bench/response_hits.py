"""The whole-response cache's hit ratio on the mix workload, against an earlier commit's.

    python -m bench.response_hits --base 3b42ab5 [--rounds 3 --seconds 8]

Each side (this checkout and `--base`, checked out into a temporary git worktree) gets its
own reference services, whose change events reach only that side's gateway, and a gateway
with the response cache on. In turns, each runs the mix workload (60% product pages, 25%
listings, 10% deep queries, 5% placeOrder) over a working set of 100 distinct requests at
concurrency 8: every cycle orders the same five products again (and cancels each order
at once, so their stock lasts), so the hit ratio shows how
much each order evicts. A hit is a query answered with an `Age` header. Writes the
"Response cache hit ratio" section of bench/RESULTS.md and bench/response_hits.json.
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

from bench.checkout import checkout, short
from bench.report import replace_section
from bench.run import WORKING_SET
from bench.workloads import PLACE_ORDER, mix
from tests.harness import Gateway, free_port, start_gateway, start_services

BENCH = Path(__file__).resolve().parent
SECTION = "Response cache hit ratio"
CANCEL = "mutation($id: ID!) { cancelOrder(id: $id) { order { id } errors { code } } }"
ENV = {"CACHE_ENABLED": "true", "RESPONSE_CACHE": "true", "LOG_LEVEL": "warning"}


async def run(gateway: Gateway, seconds: float, concurrency: int, start: int
              ) -> dict[str, int]:
    """The mix over the working set for `seconds`: queries, hits, orders, failures."""
    counts = {"queries": 0, "hits": 0, "orders": 0, "failures": 0}
    next_index = start
    stop_at = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while time.monotonic() < stop_at:
            i, next_index = next_index, next_index + 1
            query, variables, headers = mix(i % WORKING_SET)
            async with session.post(gateway.url + "/graphql", headers=headers,
                                    json={"query": query, "variables": variables}) as resp:
                body = orjson.loads(await resp.read())
                hit = "Age" in resp.headers
            if resp.status != 200 or "errors" in body:
                counts["failures"] += 1
                continue
            if query is not PLACE_ORDER:
                counts["queries"] += 1
                counts["hits"] += hit
                continue
            order = body["data"]["placeOrder"]["order"]
            if order is None:
                counts["failures"] += 1
                continue
            counts["orders"] += 1
            # Cancelled at once: the stock stays, so every cycle orders again (two writes).
            async with session.post(gateway.url + "/graphql", headers=headers,
                                    json={"query": CANCEL, "variables": {"id": order["id"]}}
                                    ) as resp:
                body = orjson.loads(await resp.read())
            if resp.status != 200 or "errors" in body or body["data"]["cancelOrder"]["errors"]:
                counts["failures"] += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.response_hits")
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    base, head = short(args.base), short("HEAD")
    ratios: dict[str, list[float]] = {"head": [], "base": []}
    totals: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-hits-") as tmpdir, \
            checkout(base, Path(tmpdir) / "base") as earlier:
        tmp = Path(tmpdir)
        started: list[Any] = []
        try:
            sides: dict[str, Gateway] = {}
            for side, where in (("head", None), ("base", earlier)):
                port = free_port()
                services = start_services(tmp / side,
                                          webhooks=[f"http://127.0.0.1:{port}/events"])
                started.append(services)
                sides[side] = start_gateway(tmp / side, services, port=port, env=ENV,
                                            root=where)
                started.append(sides[side])
            index = 0
            for r in range(args.rounds):
                for side in (("head", "base") if r % 2 == 0 else ("base", "head")):
                    counts = asyncio.run(run(sides[side], args.seconds, args.concurrency,
                                             index))
                    index += 100_000
                    if counts["failures"]:
                        raise RuntimeError(f"{side}: {counts}")
                    ratios[side].append(counts["hits"] / max(1, counts["queries"]))
                    total = totals.setdefault(side, dict.fromkeys(counts, 0))
                    for name, n in counts.items():
                        total[name] += n
                    print(f"round {r} {side}: {counts}, hit ratio {ratios[side][-1]:.3f}",
                          flush=True)
        finally:
            for process in reversed(started):
                process.stop()
    report = {"head": head, "base": base, "ratios": ratios, "totals": totals}
    (args.out / "response_hits.json").write_bytes(
        orjson.dumps(report, option=orjson.OPT_INDENT_2))
    command = (f"python -m bench.response_hits --base {args.base} --rounds {args.rounds} "
               f"--seconds {args.seconds:g} --concurrency {args.concurrency}")
    lines = [
        f"`{command}`: the mix workload over a working set of {WORKING_SET} requests "
        "(5 of them orders, placed and cancelled again every cycle), each side with its "
        "own services, in turns. A hit is a query answered from the response cache "
        "(`Age` header).", "",
        "| commit | hit ratio per round | median | queries | orders |",
        "|---|---|---|---|---|",
    ]
    for side, name in (("base", base), ("head", head)):
        lines.append(
            f"| {name} ({'before' if side == 'base' else 'after'}) | "
            + ", ".join(f"{x:.3f}" for x in ratios[side])
            + f" | {statistics.median(ratios[side]):.3f} | {totals[side]['queries']} | "
            f"{totals[side]['orders']} |")
    replace_section(args.out / "RESULTS.md", SECTION, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
