"""The bounded labels clients choose (client names and versions, currencies), the draft's
selection paths, and the exemplars the workers share."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from app.telemetry import metrics
from app.telemetry.extension import selection_path
from app.telemetry.waterfall import dotted


@pytest.fixture(autouse=True)
def fresh_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_clients", {})
    monkeypatch.setattr(metrics, "_currencies", set())


def test_client_names_are_admitted_only_when_allowed_and_up_to_the_limit() -> None:
    labels = metrics.client_labels
    assert labels(None, "1.0", admit=True, limit=2) == ("unknown", "unknown")
    assert labels("web", "1.0", admit=False, limit=2) == ("other", "other")
    assert labels("web", "1.0", admit=True, limit=2) == ("web", "1.0")
    # Admitted once: its own label whoever sends it; a new version needs admission too.
    assert labels("web", "1.0", admit=False, limit=2) == ("web", "1.0")
    assert labels("web", "2.0", admit=False, limit=2) == ("web", "other")
    assert labels("web", None, admit=False, limit=2) == ("web", "unknown")
    assert labels("ios", None, admit=True, limit=2) == ("ios", "unknown")
    assert labels("android", "1", admit=True, limit=2) == ("other", "other")  # full
    assert labels("x" * 65, "1", admit=True, limit=5) == ("other", "other")
    assert labels("bad\nname", "1", admit=True, limit=5) == ("other", "other")
    for n in range(metrics.MAX_CLIENT_VERSIONS + 3):
        labels("web", f"3.{n}", admit=True, limit=2)
    assert len(metrics._clients["web"]) == metrics.MAX_CLIENT_VERSIONS


def test_currencies_are_iso_codes_and_bounded() -> None:
    assert metrics.currency_label("USD") == "USD"
    for bad in ("usd", "US", "EURO", "U$D", None, 840):
        assert metrics.currency_label(bad) == "other", bad
    for n in range(metrics.MAX_CURRENCIES + 5):
        metrics.currency_label("A" + chr(65 + n // 26) + chr(65 + n % 26))
    assert len(metrics._currencies) == metrics.MAX_CURRENCIES
    assert metrics.currency_label("ZZZ") == "other"


def test_selection_paths_are_the_drafts_and_the_waterfall_keeps_its_own() -> None:
    keys = ("topProducts", 0, "reviews", 12, "author")
    assert selection_path(keys) == "topProducts[0].reviews[12].author"
    assert selection_path(("matrix", 1, 2, "x")) == "matrix[1][2].x"
    assert dotted(selection_path(keys)) == "topProducts.0.reviews.12.author"


def test_each_bucket_shows_the_newest_exemplar_of_any_worker(tmp_path: Path) -> None:
    mine = metrics.Exemplars(str(tmp_path))
    labels = (("operation", "Deep"), ("outcome", "ok"))
    mine.record("gateway_request_duration_seconds", labels, "0.05", 0.03, "a" * 32)
    mine.record("gateway_request_duration_seconds", labels, "0.1", 0.07, "b" * 32)
    assert (tmp_path / f"exemplars_{os.getpid()}.json").exists()  # (no loop: at once)
    # Another worker's file: newer for one bucket, older for the other.
    at = mine.latest[("gateway_request_duration_seconds", labels, "0.05")][2]
    (tmp_path / "exemplars_1.json").write_bytes(orjson.dumps([
        ["gateway_request_duration_seconds", labels, "0.05", "c" * 32, 0.04, at + 1],
        ["gateway_request_duration_seconds", labels, "0.1", "d" * 32, 0.08, at - 100],
    ]))
    (tmp_path / "exemplars_2.json").write_bytes(b"{torn")  # unreadable: skipped
    merged = mine.merged()
    assert merged[("gateway_request_duration_seconds", labels, "0.05")].labels == {
        "trace_id": "c" * 32}
    assert merged[("gateway_request_duration_seconds", labels, "0.1")].labels == {
        "trace_id": "b" * 32}
    mine.remove(os.getpid())
    assert not (tmp_path / f"exemplars_{os.getpid()}.json").exists()
    mine.remove(1)  # a worker that ended: the supervisor forgets its exemplars too
    assert not (tmp_path / "exemplars_1.json").exists()
