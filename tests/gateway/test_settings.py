"""Settings: one typed object, a clear refusal of a bad value at start, and the README's
table generated from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.config.settings import Settings, SettingsError, readme_with_table
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
    ({"EVENT_SECRET": "short"}, "EVENT_SECRET must be at least 32 bytes"),
    ({"METRICS_PORT": "8000"}, "METRICS_PORT must be 0"),
    ({"MAX_ID_LENGTH": "0"}, "MAX_ID_LENGTH"),
    ({"IDEMPOTENCY_TTL_S": "0"}, "IDEMPOTENCY_TTL_S"),
    ({"AUTH_JWKS_URL": "https://id.example/jwks"}, "AUTH_ISSUER"),
    ({"MAX_QUERY_COST": "30000"}, "MAX_QUERY_COST"),
    ({"PERSISTED_QUERIES_ONLY": "true"}, "PERSISTED_QUERIES_ONLY needs PERSISTED_QUERIES_FILE"),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
    ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
    ({"REDIS_URL": "redis+cluster://127.0.0.1:7000/2"}, "REDIS_URL: a Redis Cluster has only"),
    ({"REDIS_URL": "redis+cluster://127.0.0.1"}, "REDIS_URL: cluster node"),
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


def test_a_settings_file_sets_what_the_environment_does_not(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text('MAX_QUERY_DEPTH = 7\nCORS_ORIGINS = "https://shop.example"\n'
                    "INTROSPECTION = false\nRETRY_BASE_S = 0.2\n")
    settings = Settings.from_env({"GATEWAY_SETTINGS_FILE": str(file), "MAX_QUERY_DEPTH": "9"})
    assert settings.max_query_depth == 9  # the environment wins
    assert settings.cors_origins == "https://shop.example"
    assert settings.introspection is False and settings.retry_base_s == 0.2
    assert Settings.from_env({}).max_query_depth == 12  # and without the file, the default


@pytest.mark.parametrize(("text", "message"), [
    ("MAX_QUERY_DEPHT = 7\n", "unknown settings: MAX_QUERY_DEPHT"),  # a typo is not ignored
    ("MAX_QUERY_DEPTH = [7]\n", "MAX_QUERY_DEPTH in .* must be a string, number or boolean"),
    ("MAX_QUERY_DEPTH = seven\n", "is not valid TOML"),
    ('MAX_QUERY_DEPTH = "seven"\n', "MAX_QUERY_DEPTH='seven' is not a valid int"),
    ("REQUEST_DEADLINE_S = 0\n", "REQUEST_DEADLINE_S must be positive"),
])
def test_a_bad_settings_file_is_refused_with_what_is_wrong(
        tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text(text)
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"GATEWAY_SETTINGS_FILE": str(file)})
    with pytest.raises(SettingsError, match="cannot be read"):
        Settings.from_env({"GATEWAY_SETTINGS_FILE": str(tmp_path / "missing.toml")})


def test_the_profiles_differ_only_in_settings() -> None:
    """Development and production run the same code; the profiles are settings files."""
    profiles = {name: Settings.from_env({"GATEWAY_SETTINGS_FILE": str(
        ROOT / "config" / f"{name}.toml")}) for name in ("development", "production")}
    dev, prod = profiles["development"], profiles["production"]
    assert (dev.dev_mode, dev.graphql_ide, dev.introspection) == (True, True, True)
    assert (prod.dev_mode, prod.graphql_ide, prod.introspection) == (False, False, False)
    assert (prod.log_format, prod.hsts, prod.rate_limit_enabled) == ("json", True, True)
    assert (dev.metrics_port, prod.metrics_port) == (0, 9100)  # /metrics off the public port


def test_odd_files_and_numbers_are_refused_not_crashed_on(tmp_path: Path) -> None:
    latin = tmp_path / "latin1.toml"
    latin.write_bytes('CORS_ORIGINS = "https://caf\xe9.example"\n'.encode("latin-1"))
    with pytest.raises(SettingsError, match="is not valid TOML"):
        Settings.from_env({"GATEWAY_SETTINGS_FILE": str(latin)})
    for value in ("nan", "inf"):
        with pytest.raises(SettingsError, match="REQUEST_DEADLINE_S"):
            Settings.from_env({"REQUEST_DEADLINE_S": value})
