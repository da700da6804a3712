"""The alerting and recording rules (ops/prometheus/) as Prometheus users test them:
`promtool check rules` and `promtool test rules`, with a case that fires and one that does
not for every alert; and every alert's runbook (docs/runbooks/)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import ROOT, require

RULES = ROOT / "ops" / "prometheus"
RUNBOOKS = ROOT / "docs" / "runbooks"
PROMTOOL = shutil.which("promtool")


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.rules.yml"))


def unit_test_files() -> list[Path]:
    return sorted((RULES / "tests").glob("*.test.yml"))


def alerts() -> dict[str, list[dict[str, Any]]]:
    """Every alerting rule by alert name (an SLO alert has one rule per window pair)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found.setdefault(rule["alert"], []).append(rule)
    return found


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    require(PROMTOOL is not None, "promtool (Debian's prometheus package)")
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", *map(str, rule_files()))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(rule_files())


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", *map(str, unit_test_files()))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: with the breaker alert asking for "open" (2) alone, a breaker
    that goes open, half-open, open again no longer fires, and promtool says so."""
    copy = tmp_path / "prometheus"
    shutil.copytree(RULES, copy)
    rules = copy / "causes.rules.yml"
    text = rules.read_text()
    assert "(gateway_circuit_state) >= 1" in text
    rules.write_text(text.replace("(gateway_circuit_state) >= 1", "(gateway_circuit_state) == 2"))
    done = promtool("test", "rules", str(copy / "tests" / "causes.test.yml"))
    assert done.returncode != 0
    assert "GatewayCircuitOpen" in done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases: dict[str, set[bool]] = {}
    for path in unit_test_files():
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    for name in alerts():
        assert cases.get(name) == {True, False}, f"{name}: cases that fire and do not: {cases.get(name)}"


@pytest.mark.parametrize("name", sorted(alerts()))
def test_every_alert_has_its_runbook(name: str) -> None:
    for rule in alerts()[name]:
        assert rule["annotations"]["runbook_url"] == f"docs/runbooks/{name}.md"
        assert rule["annotations"]["summary"]
        assert rule["labels"]["severity"] in ("page", "warning")
    page = (RUNBOOKS / f"{name}.md").read_text()
    assert page.startswith(f"# {name}\n")
    for section in ("**Meaning.**", "**First three things to run**", "**Mitigations**"):
        assert section in page, f"{name}.md lacks {section}"
    first = page.split("**First three things to run**")[1].split("**Mitigations**")[0]
    assert [line[:3] for line in first.splitlines() if line[:3] in ("1. ", "2. ", "3. ")] \
        == ["1. ", "2. ", "3. "]
    assert name in (RUNBOOKS / "README.md").read_text()


def test_the_readme_lists_the_codes_that_are_the_clients_own() -> None:
    """README, For SREs, says which `extensions.code` values count against availability:
    the same list as the code that decides it; anything else is the gateway's fault."""
    from app.core.errors import CLIENT_FAULT_CODES, fault

    section = (ROOT / "README.md").read_text().split("## For SREs")[1].split("\n## ")[0]
    listed = section.split("- `client`")[1].split("- `server`")[0]
    assert set(re.findall(r"`([A-Z_]+)`", listed)) == CLIENT_FAULT_CODES
    assert fault(set()) == "none"
    assert fault({"FORBIDDEN", "NOT_FOUND"}) == "client"
    assert fault({"FORBIDDEN", "CIRCUIT_OPEN"}) == "server"
    assert fault({"SOMETHING_NEW"}) == "server"
    for name in alerts():
        assert f"[runbook](docs/runbooks/{name}.md)" in section, name
