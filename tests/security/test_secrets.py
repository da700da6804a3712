"""Secrets: outside development mode the gateway does not start with a secret this repository
publishes (anyone could sign change events or tokens with it), and signed change events with
made-up ids cannot grow its memory without bound."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest

from app.config.settings import (
    DEV_CLIENT_SECRETS,
    DEV_EVENT_SECRET,
    DEV_JWT_SECRET,
    PUBLISHED_SECRETS,
)
from tests.harness import EVENT_SECRET, JWT_SECRET, ROOT, Gateway, free_port, http

PRODUCTION = str(ROOT / "config" / "production.toml")


def start_process(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m app` with the production profile and `env`; it must end by itself."""
    return subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "GATEWAY_SETTINGS_FILE": PRODUCTION,
             "GATEWAY_PORT": str(free_port()), "METRICS_PORT": str(free_port()), **env})


@pytest.mark.parametrize(("env", "named"), [
    # The profile alone: EVENT_SECRET's default is the published one.
    ({"AUTH_JWT_SECRET": JWT_SECRET}, "EVENT_SECRET is the published development value"),
    ({"EVENT_SECRET": DEV_EVENT_SECRET, "AUTH_JWT_SECRET": JWT_SECRET},
     "EVENT_SECRET is the published development value"),
    ({"EVENT_SECRET": EVENT_SECRET, "AUTH_JWT_SECRET": DEV_JWT_SECRET},
     "AUTH_JWT_SECRET is the published development value"),
    ({"EVENT_SECRET": "short-secret", "AUTH_JWT_SECRET": JWT_SECRET},
     "EVENT_SECRET must be at least 32 bytes"),
    ({"EVENT_SECRET": EVENT_SECRET, "AUTH_JWT_SECRET": "short-secret"},
     "AUTH_JWT_SECRET must be at least 32 bytes"),
])
def test_production_will_not_start_with_a_published_or_short_secret(
        env: dict[str, str], named: str) -> None:
    result = start_process(env)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()  # one clear line, no traceback
    assert line.startswith("gateway: bad setting: ") and named in line


def test_every_secret_the_repository_publishes_is_refused() -> None:
    """Every secret-like value on a line about a secret in the Makefile, the profiles, the
    docker files, the READMEs and the services' defaults is in PUBLISHED_SECRETS (one added
    there without it would be accepted in production)."""
    files = [ROOT / "Makefile", ROOT / "README.md", *sorted((ROOT / "config").iterdir()),
             *sorted(p for p in (ROOT / "docker").rglob("*") if p.is_file()),
             ROOT / "services" / "config.py", ROOT / "services" / "README.md"]
    found: dict[str, str] = {}  # token -> the file that has it
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            if "secret" in line.lower():
                for token in re.findall(r"[A-Za-z0-9_\-]{24,}", line):
                    if not re.fullmatch(r"[A-Z0-9_]+", token):  # not a variable's name
                        found.setdefault(token, path.name)
    # The scan sees them (the Makefile's event secret and `make token`'s client secret).
    assert DEV_EVENT_SECRET in found and set(found) & DEV_CLIENT_SECRETS
    assert set(found) <= PUBLISHED_SECRETS, {v: f for v, f in found.items()
                                             if v not in PUBLISHED_SECRETS}


def test_development_mode_still_starts_with_the_published_secrets(
        start: Callable[..., Gateway]) -> None:
    """What `make run` does: the development profile (tokens through the authorization
    server's JWKS, no HS256 secret), the Makefile's event secret."""
    gateway = start(GATEWAY_SETTINGS_FILE=str(ROOT / "config" / "development.toml"),
                    DEV_MODE=None, EVENT_SECRET=DEV_EVENT_SECRET, AUTH_JWT_SECRET=None)
    assert http("GET", gateway.url + "/healthz")[0] == 200


def signed(event: dict[str, object], secret: str) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(event)
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-Signature": f"sha256={digest}", "Content-Type": "application/json"}


async def test_events_signed_with_the_published_secret_are_refused(prod: Gateway) -> None:
    body, headers = signed({"type": "Product", "id": "p1", "op": "update",
                            "version": 2**40}, DEV_EVENT_SECRET)
    async with aiohttp.ClientSession() as session, session.post(
            prod.url + "/events", data=body, headers=headers) as resp:
        assert resp.status == 401


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def send_events(gateway: Gateway, ids: range, concurrency: int = 8) -> None:
    async with aiohttp.ClientSession() as session:
        queue = iter(ids)

        async def worker() -> None:
            for n in queue:
                body, headers = signed({"type": "Product", "id": f"forged-{n}",
                                        "op": "update", "version": 2**40}, EVENT_SECRET)
                async with session.post(gateway.url + "/events", data=body,
                                        headers=headers) as resp:
                    assert resp.status == 204

        await asyncio.gather(*(worker() for _ in range(concurrency)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
async def test_signed_events_with_made_up_ids_do_not_grow_memory_without_bound(
        start: Callable[..., Gateway]) -> None:
    """Each event's version is remembered per entity, at most CACHE_MAX_ENTRIES of them
    (and EVENT_VERSION_TTL_S long): events for ever new ids stop costing memory once the
    table is full. Issue 17 measured +75 MB for 100,000 such events before the bound."""
    gateway = start(CACHE_MAX_ENTRIES="1000")
    pid = gateway.process.proc.pid
    await send_events(gateway, range(0, 5_000))  # fills the table, and the allocator
    before = rss_kb(pid)
    await send_events(gateway, range(5_000, 35_000))
    grown = rss_kb(pid) - before
    # Unbounded (CACHE_MAX_ENTRIES=1000000), 40,000 such events added 29.5 MB here.
    assert grown < 4_000, f"{grown} kB more after 30,000 events with new ids"
