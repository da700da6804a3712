"""A smoke run of bench.speed (CPU per request against another commit), so it cannot rot.
Never a timing assertion: only that every cell ran on both sides and the worktrees are gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.harness import ROOT


def run_module(module: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, check=True, timeout=300,
                   stdin=subprocess.DEVNULL, capture_output=True, text=True)


def test_speed_bench_smoke(tmp_path: Path) -> None:
    run_module("bench.speed", "--base", "HEAD", "--smoke", "--rounds", "2", "--floor",
               "--floor-reqwest", "--floor-graphql",
               "--concurrency", "1,4", "--out", str(tmp_path))
    result = orjson.loads((tmp_path / "speed.json").read_bytes())
    cells = {(row["workload"], row["concurrency"]) for row in result["rows"]}
    assert cells == {(w, c) for w in ("typename", "product", "product_page", "deep")
                     for c in (1, 4)}
    for row in result["rows"]:
        # (CPU comes in clock ticks: a few requests may show none.)
        assert len(row["ratios"]) == 2 and row["median_head"] >= 0 and row["median_base"] >= 0
        assert row["rps_head"] > 0 and row["rps_base"] > 0
        # (--floor: every workload has its floors; --floor-graphql: `{ __typename }`.)
        assert row["floor_rps"] > 0 and row["floor_reqwest_rps"] > 0
        assert ("floor_graphql_rps" in row) == (row["workload"] == "typename")
    assert "## CPU per request" in (tmp_path / "RESULTS.md").read_text()
    listed = subprocess.run(["git", "worktree", "list"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    assert "bench-speed-" not in listed
