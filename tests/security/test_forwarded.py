"""Forwarded headers (issue 17, finding 9): X-Forwarded-For is believed only from the proxies
TRUSTED_PROXIES names (none by default), and Forwarded from nobody, so a caller cannot take a
fresh anonymous rate-limit bucket by naming a new address."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from tests.harness import Gateway
from tests.security.conftest import call

CHEAP = "{ topProducts(first: 3) { id } }"  # cost 3 (3 products; ids cost nothing)
LIMITED = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_ANONYMOUS": "30",
           "RATE_LIMIT_WINDOW_S": "600",  # refills 0.05/s: nothing refills during a test
           "MAX_QUERY_COST": "30"}


async def remaining(session: aiohttp.ClientSession, gateway: Gateway, **headers: str) -> int:
    answer = await call(session, gateway, CHEAP, headers=headers)
    return int(answer.headers["RateLimit-Remaining"])


async def test_a_caller_cannot_pick_its_bucket_with_forwarded_headers_by_default(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    gateway = start(**LIMITED)  # the test runs on loopback, which uvicorn trusted
    seen = [await remaining(http_session, gateway, **{
        "X-Forwarded-For": f"203.0.113.{i}", "Forwarded": f"for=198.51.100.{i}",
        "X-Real-IP": f"192.0.2.{i}"}) for i in range(1, 6)]
    assert seen == [27, 24, 21, 18, 15]  # one bucket: the connection's address


async def test_the_trusted_proxys_x_forwarded_for_names_the_client(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    gateway = start(**LIMITED, TRUSTED_PROXIES="127.0.0.1")
    # Each address its own bucket.
    assert [await remaining(http_session, gateway, **{"X-Forwarded-For": f"203.0.113.{i}"})
            for i in range(1, 4)] == [27, 27, 27]
    # A client's own X-Forwarded-For, passed on by the proxy with the address it saw
    # appended, does not choose the bucket: the last address before the proxy does.
    assert [await remaining(http_session, gateway, **{
        "X-Forwarded-For": f"198.51.100.{i}, 203.0.113.50"}) for i in range(1, 4)] == [
        27, 24, 21]
    # Forwarded (RFC 7239) is not read, even from the proxy.
    assert [await remaining(http_session, gateway, Forwarded=f"for=198.51.100.{i}")
            for i in range(1, 3)] == [27, 24]


def test_trusted_proxies_must_be_addresses() -> None:
    from app.config.settings import Settings, SettingsError

    assert Settings.from_env({"TRUSTED_PROXIES": "10.0.0.5, 172.28.0.0/24"}).proxies() == [
        "10.0.0.5/32", "172.28.0.0/24"]
    for bad in ("*", "lb", "10.0.0.0/33"):
        try:
            Settings.from_env({"TRUSTED_PROXIES": bad})
        except SettingsError as err:
            assert "TRUSTED_PROXIES" in str(err)
        else:
            raise AssertionError(f"{bad!r} accepted")
