"""The long history check: the README's consistency guarantees over minutes of history.

The workload of `tests/history/workload.py` (two gateway replicas on a private Redis, the six
services, mutations, direct writes and reads, events delayed, duplicated, reordered and
lost, random upstream latency, a pub/sub kill) runs for `--seconds`, and the checker of
`tests/history/checker.py` verifies the whole history; the first violation of each kind is
printed with its timeline. Writes bench/history.json and the "History checker" section of
bench/RESULTS.md (the command, the operations checked, the violations found).

    python -m bench.history                          # 60 s, the schema's own TTLs
    python -m bench.history --seconds 300 --callers 4 --readers 3 --kills 3
    python -m bench.history --base 0171576           # the replicas run that commit's code
    python -m bench.history --kills 0 --stalls 20 --set REDIS_BREAKER_OPEN_S=0.2

`--base REV` runs the gateway replicas from an earlier commit (extracted with git archive),
the services, the workload and the checker from this checkout: what the checker finds in
code from before a fix. `--short-ttls` uses the TTLs of the short run in `make test`, so
that values whose event was lost expire within the run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from bench.report import replace_section
from tests.history.checker import Nemesis, Read, Write, check, violations_text
from tests.history.test_history import SHORT
from tests.history.workload import PUBSUB_KILL, Config, run

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SECTION = "History checker"


def checkout(rev: str, into: Path) -> tuple[Path, str]:
    """`rev`'s tree in `into` (git archive: no worktree is registered), and its short hash."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    tree = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tree)) as archive:
        archive.extractall(into, filter="data")
    return into, commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--callers", type=int, default=3, help="gateway writers (mutations)")
    parser.add_argument("--readers", type=int, default=2, help="readers per replica")
    parser.add_argument("--renamers", type=int, default=2, help="direct catalog writers")
    parser.add_argument("--restockers", type=int, default=1, help="direct inventory writers")
    parser.add_argument("--kills", type=int, default=2,
                        help="pub/sub kills, spread over the run (0: none)")
    parser.add_argument("--write-think-ms", type=float, default=300.0,
                        help="a writer waits up to this between writes")
    parser.add_argument("--stalls", type=int, default=0,
                        help="Redis stops (SIGSTOP, 300 ms), spread over the run")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the replicas, such as REDIS_BREAKER_OPEN_S=0.2")
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--event-delay-ms", type=float, default=600.0)
    parser.add_argument("--redis-delay-ms", type=float, default=0.0,
                        help="Redis replies (not pub/sub messages) wait up to this")
    parser.add_argument("--no-response-cache", action="store_true")
    parser.add_argument("--short-ttls", action="store_true",
                        help="the TTLs of the short run in make test")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--base", help="run the replicas from this commit")
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-history-"))
    root = None
    label = "this checkout"
    if args.base:
        root, commit = checkout(args.base, tmp / "base")
        label = f"the replicas at {commit}"
    config = Config(
        seconds=args.seconds, callers=args.callers, readers=args.readers,
        renamers=args.renamers, restockers=args.restockers, latency_ms=args.latency_ms,
        write_think_ms=args.write_think_ms,
        event_delay_ms=args.event_delay_ms, redis_delay_ms=args.redis_delay_ms,
        response_cache=not args.no_response_cache, seed=args.seed,
        kills=tuple(args.seconds * (i + 1) / (args.kills + 1) for i in range(args.kills)),
        stalls=tuple(args.seconds * (i + 0.5) / args.stalls for i in range(args.stalls)),
        gateway_env=dict(item.split("=", 1) for item in args.set),
        cache_hints=SHORT.cache_hints if args.short_ttls else "",
        cache_stale=SHORT.cache_stale if args.short_ttls else "",
        # Setup orders to cancel: enough for the run (a caller cancels about one in three
        # of its mutations, about three a second).
        cancellable=max(40, int(args.seconds * 1.5)),
        gateway_root=root,
    )
    started = time.monotonic()
    try:
        result = asyncio.run(run(config, tmp / "run"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    took = time.monotonic() - started
    if result.problems:
        print("the history cannot be checked:", *result.problems, sep="\n  ")
        return 2
    checked = time.monotonic()
    report = check(result.history, result.bounds)
    check_s = time.monotonic() - checked
    text = violations_text(result.history, report)
    print(text)

    ops = result.history.ops
    kills = [op.start for op in ops if isinstance(op, Nemesis) and op.what == PUBSUB_KILL]
    # Writes by kind, each once (an addReview writes two keys: its list and its count).
    writes = Counter(what for what, _, _ in {(op.what, op.caller, op.start) for op in ops
                                              if isinstance(op, Write) and op.ok})
    summary: dict[str, Any] = {
        "command": " ".join(["python -m bench.history",
                             *(argv if argv is not None else sys.argv[1:])]),
        "replicas": label, "seconds": args.seconds, "wall_s": round(took, 1),
        "check_s": round(check_s, 2), "operations": len(ops),
        "reads": report.reads, "observations": report.observations,
        "writes": dict(writes), "deliveries": report.deliveries,
        "events_implying": len(result.history.implies),
        "failed_reads": sum(1 for op in ops if isinstance(op, Read) and not op.ok),
        "violations": report.by_kind(), "kills": args.kills,
        # Where they were: within 5 s after a pub/sub kill, or elsewhere.
        "after_kill": sum(1 for v in report.violations
                          if any(0 <= v.at - k <= 5 for k in kills)),
        "bounds": {
            "event_bound_s": result.bounds.event_bound, "slack_s": result.bounds.slack},
        "first": (text.split("\n\n")[1].splitlines()[0] if report.violations else None),
        # What the replicas logged about Redis and their invalidation channel.
        "incidents": dict(Counter(incident(op.detail) for op in ops
                                  if isinstance(op, Nemesis) and op.what.endswith("logged"))),
    }
    # One row per command (with --base, per commit): a run replaces its own row only.
    path = args.out / "history.json"
    runs: dict[str, Any] = orjson.loads(path.read_bytes()) if path.exists() else {}
    runs[f"{summary['command']} [{label}]"] = summary
    path.write_bytes(orjson.dumps(runs, option=orjson.OPT_INDENT_2))
    replace_section(args.out / "RESULTS.md", SECTION, results_section(runs))
    return 1 if report.violations else 0


def incident(message: str) -> str:
    """A replica's log line without what it goes on to say it does: "invalidation channel
    lost (its cause)", "invalidation channel back", "redis unavailable (...)"."""
    head, cause, _ = message.partition("): ")
    return head + ")" if cause else message.split(": ")[0]


def results_section(runs: dict[str, Any]) -> str:
    lines = [
        "The consistency guarantees of the README over long histories (`make bench-history`: "
        "`python -m bench.history`; the workload and the checker are `tests/history/`). A "
        "row per command; `--base` runs the replicas from an earlier commit.", "",
        "| command | replicas | history | operations | reads (observations) | writes | "
        "event deliveries | violations |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for run_ in runs.values():
        found = ", ".join(f"{k} {n}" for k, n in sorted(run_["violations"].items())) or "none"
        if run_["violations"] and run_.get("kills", 1):
            found += f" ({run_.get('after_kill', '?')} within 5 s after a kill)"
        lines.append(
            f"| `{run_['command']}` | {run_['replicas']} | {run_['seconds']:g} s | "
            f"{run_['operations']} | {run_['reads']} ({run_['observations']}) | "
            f"{sum(run_['writes'].values())} | {run_['deliveries']} | {found} |")
        said = "; ".join(f"{what} ({n})" for what, n in sorted(run_.get("incidents", {}).items()))
        if run_["first"] or said:
            notes.append(f"- `{run_['command']}` ({run_['replicas']}): "
                         + (f"first, {run_['first']}" if run_["first"] else "no violation")
                         + (f". The replicas logged: {said}." if said else "."))
    if notes:
        lines += ["", "First violations, and what the replicas logged about Redis and their "
                  "invalidation channel:", "", *notes]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
