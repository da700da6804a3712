"""A smoke run of the benchmark harness, so it cannot rot. Never a timing assertion: only that
every cell ran, nothing failed, and the upstream request counts are the batched minimum."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.harness import ROOT


def test_bench_smoke_run(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, check=True, timeout=300, stdin=subprocess.DEVNULL, capture_output=True,
    )
    results = orjson.loads((tmp_path / "results.json").read_bytes())
    rows = results["rows"]
    cells = {(r["mode"], r["workload"], r["latency_ms"], r["concurrency"]) for r in rows}
    assert cells == {
        (m, w, lat, c)
        for m in ("cold", "warm", "response")
        for w in ("deep", "product_page", "category_listing", "mix")
        for lat in (0, 5)
        for c in (1, 32)
    }
    failed = [r for r in rows if r["failures"] or r["responses_with_errors"]]
    assert not failed, [{k: r[k] for k in ("mode", "workload", "latency_ms", "concurrency",
                                           "failures", "responses_with_errors", "first_error")}
                        for r in failed]
    deep = {r["mode"]: r["upstream_per_query"] for r in rows if r["workload"] == "deep"}
    # Cold, the deep query's minimum: one request per service per level (tests/gateway);
    # warm, the repeated query is answered from the caches (stock may expire meanwhile).
    assert {r["upstream_per_query"] for r in rows
            if r["workload"] == "deep" and r["mode"] == "cold"} == {10.0}
    assert deep["warm"] < 1 and deep["response"] < 1
    assert all(r["cpu_ms_per_request"] >= 0 and r["peak_rss_mb"] > 0 for r in rows)
    assert all(0 <= r["gc_ms_per_request"] <= r["cpu_ms_per_request"] + 1 for r in rows)
    # The services' own time per request: some whenever they were called, none otherwise.
    assert all(r["services_ms"] > 0 for r in rows if r["upstream_per_query"] >= 1)
    assert all(r["services_ms"] == 0 for r in rows if r["upstream_per_query"] == 0)
    # An unbatched gateway would make hundreds of lookups for the deep query.
    assert results["unbatched"]["deep"] > 100
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| cold | deep |" in report and "## Caches against cold" in report
    # The cache ratios from gateways run in turns.
    inter = results["interleaved"]
    assert inter["workload"] == "deep" and inter["latency_ms"] == 5
    assert all(len(v) == 1 and v[0] > 0 for v in inter["rps"].values())
    assert inter["warm_ratio"] > 0 and inter["response_ratio"] > 0
    assert "## Cache ratios, interleaved" in report


def run_module(module: str, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, timeout=300,
                          stdin=subprocess.DEVNULL, capture_output=True)
    # A failed run says why (its last output), not only its exit status.
    assert done.returncode == 0, (done.stdout[-2000:] + done.stderr[-4000:]).decode(
        errors="replace")


def test_idle_probe_smoke_keeps_the_other_sections(tmp_path: Path) -> None:
    (tmp_path / "RESULTS.md").write_text("# Benchmark results\n\n## Resilience\n\nkept\n")
    run_module("bench.idle", "--rounds", "1", "--units", "5", "--out", str(tmp_path))
    idle = orjson.loads((tmp_path / "idle.json").read_bytes())
    assert set(idle["ratio"]) >= {"back to back", "after 5 ms idle"}
    assert idle["ratio"]["back to back"] == 1.0 and idle["median_ms"]["after 5 ms idle"] > 0
    # The matrix rewrites RESULTS.md: the sections other commands wrote stay.
    subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--workloads", "product_page",
         "--modes", "cold", "--latencies", "0", "--concurrency", "1", "--out", str(tmp_path)],
        cwd=ROOT, check=True, timeout=300, stdin=subprocess.DEVNULL, capture_output=True)
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## Idle penalty" in report and "## Resilience\n\nkept" in report
    assert "| cold | product_page |" in report


def test_invalidation_scaleout_and_soak_smoke(tmp_path: Path) -> None:
    run_module("bench.invalidation", "--rounds", "3", "--out", str(tmp_path))
    inv = orjson.loads((tmp_path / "invalidation.json").read_bytes())
    assert set(inv) == {"single", "cluster"}  # one Redis, then a Redis Cluster
    assert all(r["rounds"] == 3 and r["max_ms"] > 0 for r in inv.values())

    run_module("bench.redis_levels", "--batch", "5", "--rounds", "3", "--out", str(tmp_path))
    levels = orjson.loads((tmp_path / "redis_levels.json").read_bytes())
    assert set(levels) == {"single", "cluster"}
    assert all(set(by["5"]) == {"read", "write", "invalidate"} for by in levels.values())

    run_module("bench.scaleout", "--seconds", "0.5", "--out", str(tmp_path))
    scale = orjson.loads((tmp_path / "scaleout.json").read_bytes())
    assert set(scale["throughput"]) == {"deep (repeated)", "product_page (warm working set)"}
    assert all(set(by) == {"1", "2"} for by in scale["throughput"].values())
    # The second replica reads what the first cached in Redis: no upstream call at all.
    assert scale["second_replica"]["hit_ratio"] == 1.0
    assert scale["second_replica"]["upstream_requests"] == 0

    run_module("bench.soak", "--minutes", "0.05", "--out", str(tmp_path))
    soak = orjson.loads((tmp_path / "soak.json").read_bytes())
    assert soak["requests"] > 0 and soak["failures"] == 0 and soak["rss_end_mb"] > 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## Cross-replica invalidation" in report and "## Scale-out" in report
    assert "## Redis Cluster: the shared level's cost" in report
    assert "## Soak" in report


def test_resilience_bench_smoke(tmp_path: Path) -> None:
    run_module("bench.resilience", "--seconds", "0.5", "--lookups", "100",
               "--out", str(tmp_path))
    res = orjson.loads((tmp_path / "resilience.json").read_bytes())
    rows = {r["scenario"]: r for r in res["deep_query"]}
    assert set(rows) == {"no faults", "10% 503 on every service", "30% 503 on every service",
                         "reviews down (503 to all), after 1 s", "reviews hung, after 1 s"}
    assert rows["no faults"]["success_rate"] == 1.0
    for label in ("reviews down (503 to all), after 1 s", "reviews hung, after 1 s"):
        row = rows[label]
        assert row["success_rate"] == 0.0 and row["partial_rate"] == 1.0, row  # the rest stands
        assert row["down"]["service"] == "reviews" and row["down"]["calls"] > 0
    # Down for a second before the measure: its breaker is open, its fields fail at once.
    down = rows["reviews down (503 to all), after 1 s"]["down"]
    assert down["circuit_open_share"] > 0.5 and down["fast_share"] > 0.5
    assert res["outage"]["requests"]["retries off"] == 100
    # The breaker opened: 20 failed calls, and the retries the budget granted them (its
    # reserve of 10 and 20% of the calls).
    assert res["breaker"]["requests_reaching_users"] <= 20 + 10 + 4
    assert "## Resilience" in (tmp_path / "RESULTS.md").read_text()


def test_tracing_cost_smoke(tmp_path: Path) -> None:
    run_module("bench.tracing", "--smoke", "--out", str(tmp_path))
    result = orjson.loads((tmp_path / "tracing.json").read_bytes())
    assert set(result["configs"]) >= {"off (default)", "resolver spans, all exported",
                                      "every field traced, all exported"}
    assert all(c["1"]["rps"] > 0 for c in result["configs"].values())
    assert result["spans_exported"] > 0  # the exporting gateways reached the sink


def test_compare_smoke_runs_an_earlier_commit_beside_this_one(tmp_path: Path) -> None:
    (tmp_path / "RESULTS.md").write_text("# Benchmark results\n\n## Soak\n\nkept\n")
    run_module("bench.compare", "--base", "HEAD", "--workloads", "deep", "--concurrency", "1",
               "--rounds", "2", "--seconds", "0.3", "--out", str(tmp_path))
    result = orjson.loads((tmp_path / "compare.json").read_bytes())
    (row,) = result["results"]
    assert len(row["ratios"]) == 2 and row["median_head"] > 0 and row["median_base"] > 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## CPU against an earlier commit" in report and "kept" in report
    # The worktree of the earlier commit is gone.
    listed = subprocess.run(["git", "worktree", "list"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    assert "bench-compare-" not in listed


def test_response_hits_smoke(tmp_path: Path) -> None:
    run_module("bench.response_hits", "--base", "HEAD", "--rounds", "1", "--seconds", "1",
               "--out", str(tmp_path))
    result = orjson.loads((tmp_path / "response_hits.json").read_bytes())
    for side in ("head", "base"):
        assert result["totals"][side]["queries"] > 0 and result["totals"][side]["orders"] > 0
        assert result["ratios"][side][0] > 0  # the working set repeats: some answers hit
    assert "## Response cache hit ratio" in (tmp_path / "RESULTS.md").read_text()


def test_redis_stall_smoke(tmp_path: Path) -> None:
    run_module("bench.redis_stall", "--queries", "20", "--rounds", "1", "--out", str(tmp_path))
    result = orjson.loads((tmp_path / "redis_stall.json").read_bytes())
    (row,) = result["rounds"]
    assert result["failures"] == 0  # (the run fails on a failed query, too)
    assert all(row[arm]["queries"] == 20 for arm in (
        "without Redis, beside Redis up", "Redis up", "without Redis, beside Redis stopped",
        "Redis stopped: after the first second", "Redis continued"))
    assert row["Redis stopped: first second"]["queries"] > 0
    assert row["readyz_status"] == "degraded"
    assert result["log_lines"] == {"down": 1, "up": 1}  # one stall: said once each way
    assert "## Redis stalled" in (tmp_path / "RESULTS.md").read_text()


def test_history_bench_smoke(tmp_path: Path) -> None:
    run_module("bench.history", "--seconds", "2", "--kills", "1", "--out", str(tmp_path))
    runs = orjson.loads((tmp_path / "history.json").read_bytes())
    (run,) = runs.values()
    assert run["violations"] == {} and run["first"] is None
    assert run["reads"] > 0 and run["deliveries"] > 0 and set(run["writes"]) >= {
        "placeOrder", "patchName", "restock"}
    section = (tmp_path / "RESULTS.md").read_text()
    assert "## History checker" in section and "python -m bench.history --seconds 2" in section


def test_defer_bench_smoke(tmp_path: Path) -> None:
    run_module("bench.defer", "--requests", "2", "--out", str(tmp_path))
    result = orjson.loads((tmp_path / "defer.json").read_bytes())
    assert set(result["figures"]) == {"first", "last", "whole"}
    assert result["parts"] >= 2  # the page came in parts
    assert "## Incremental delivery" in (tmp_path / "RESULTS.md").read_text()


def test_barrier_bench_smoke(tmp_path: Path) -> None:
    run_module("bench.barrier", "--base", "HEAD", "--requests", "2", "--floor",
               "--out", str(tmp_path))
    rows = orjson.loads((tmp_path / "barrier.json").read_bytes())
    # Each scenario on both sides and the floor app (bench/barrier.py SCENARIOS: four).
    assert len(rows) == 12 and all(row["upstream"] > 0 for row in rows)
    assert sum(row["side"] == "floor" for row in rows) == 4
    assert "## No level barrier" in (tmp_path / "RESULTS.md").read_text()


def test_subscriptions_bench_smoke(tmp_path: Path) -> None:
    (tmp_path / "RESULTS.md").write_text("# Benchmark results\n\n## Soak\n\nkept\n")
    run_module("bench.subscriptions", "--subscribers", "20", "--seconds", "1", "--events", "5",
               "--rate", "10", "--idle", "20", "--burst", "20", "--out", str(tmp_path))
    result = orjson.loads((tmp_path / "subscriptions.json").read_bytes())
    rows = {(r["protocol"], r["deflate"]): r for r in result["fan_out"]}
    assert set(rows) == {("ws", True), ("ws", False), ("sse", False)}
    for row in rows.values():
        assert row["failures"] == 0 and row["subscribers"] == 20
        assert row["messages_per_s"] > 0 and row["cpu_us_per_message"] > 0
        # Every paced event reached every subscriber, each message matched to its event.
        assert row["paced_messages"] == row["paced_expected"] == 5 * 20
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    idle = {(r["protocol"], r["per_connection"], r["deflate"]): r for r in result["idle"]}
    assert set(idle) == {("ws", 1, True), ("ws", 1, False), ("ws", 100, True), ("sse", 1, False)}
    assert all(r["failures"] == 0 and r["rss_after_kb"] > 0 for r in idle.values())
    assert result["burst"]["clients"] == 20 and result["burst"]["failures"] == 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## Subscriptions" in report and "python -m bench.subscriptions --subscribers 20" \
        in report and "## Soak\n\nkept" in report


def test_mutations_bench_smoke(tmp_path: Path) -> None:
    run_module("bench.mutations", "--smoke", "--rounds", "1", "--concurrency", "2",
               "--out", str(tmp_path))
    rows = orjson.loads((tmp_path / "mutations.json").read_bytes())["rows"]
    assert {row["workload"] for row in rows} == {"add_review", "reviewed_query",
                                                 "add_review_deep", "reviewed_deep_query"}
    assert "## Mutations through the plan" in (tmp_path / "RESULTS.md").read_text()
