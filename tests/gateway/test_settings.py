"""Settings: one typed object, a clear refusal of a bad value at start, and the README's
table generated from it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.settings import Settings, SettingsError, readme_with_table
from tests.harness import ROOT


def test_the_readmes_settings_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme_with_table(readme) == readme, "stale: run `make settings-doc`"
    for variable in ("REQUEST_DEADLINE_S", "AUTH_JWKS_URL", "OTEL_TRACES_SAMPLER_ARG",
                     "MAX_QUERY_COST", "RATE_LIMIT_GOLD"):
        assert f"| `{variable}` |" in readme


@pytest.mark.parametrize(("env", "names"), [
    ({"GATEWAY_PORT": "eighty"}, "GATEWAY_PORT"),
    ({"REQUEST_DEADLINE_S": "0"}, "REQUEST_DEADLINE_S"),
    ({"AUTH_JWT_SECRET": "short"}, "AUTH_JWT_SECRET"),
    ({"AUTH_JWKS_URL": "https://id.example/jwks"}, "AUTH_ISSUER"),
    ({"MAX_QUERY_COST": "30000"}, "MAX_QUERY_COST"),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
])
def test_a_bad_value_is_refused_by_name(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


def test_the_gateway_will_not_start_with_a_bad_setting() -> None:
    result = subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "RATE_LIMIT_WINDOW_S": "-1"})
    assert result.returncode == 2
    assert "bad setting: RATE_LIMIT_WINDOW_S must be positive" in result.stderr
    assert "Traceback" not in result.stderr
