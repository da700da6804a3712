"""Smoke runs of bench.upstream_client (the client's CPU per upstream call) and
bench.server_settings (the gateway under other uvicorn settings), so they cannot rot.
Never a timing assertion: only that every cell ran and the section was written."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.bench.test_speed_smoke import run_module


def test_upstream_client_bench_smoke(tmp_path: Path) -> None:
    run_module("bench.upstream_client", "--smoke", "--rounds", "2", "--concurrency", "1,2",
               "--out", str(tmp_path))
    result = orjson.loads((tmp_path / "client.json").read_bytes())
    assert [row["concurrency"] for row in result["rows"]] == [1, 2]
    for row in result["rows"]:
        for variant in ("aiohttp", "pyreqwest", "client", "client_pyreqwest"):
            assert len(row["us"][variant]) == 2 and row["median_rate"][variant] > 0
    assert "### The upstream client" in (tmp_path / "RESULTS.md").read_text()


def test_server_settings_bench_smoke(tmp_path: Path) -> None:
    # The variants that replace a part (the protocol, the loop, the client): each must serve.
    run_module("bench.server_settings", "--smoke", "--rounds", "1",
               "--variants", "gateway,h11,asyncio,pyreqwest", "--workloads", "product",
               "--concurrency", "2", "--out", str(tmp_path))
    result = orjson.loads((tmp_path / "server_settings.json").read_bytes())
    (row,) = result["rows"]
    assert set(row["median_rps"]) == {"gateway", "h11", "asyncio", "pyreqwest"}
    assert all(rate > 0 for rate in row["median_rps"].values())
    assert "### uvicorn's settings" in (tmp_path / "RESULTS.md").read_text()
