"""The gateway's cache of the identity provider's keys (app/security/auth.py: KeySet), on a
clock moved by hand: when it fetches again, how unknown key ids are rate-limited, and what
it keeps while the provider is down. The process tests (tests/security/test_oauth.py) run
it against the real authorization server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.security.auth import KeySet, KeysUnavailable, parse_jwks
from tests.fakeclock import FakeClock


def public_jwk(kid: str, alg: str = "RS256", **extra: Any) -> dict[str, Any]:
    private: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
                    if alg == "RS256" else ec.generate_private_key(ec.SECP256R1()))
    jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(private.public_key()))
    return {**jwk, "kid": kid, **extra}


K1, K2, K3 = public_jwk("k1"), public_jwk("k2"), public_jwk("e1", "ES256")


class Provider:
    """A JWKS endpoint's answers, counted; `gate` holds a fetch until released."""

    def __init__(self, *keys: dict[str, Any]) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.down = False
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Any:
        self.fetches += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise OSError("connection refused")
        return {"keys": list(self.keys)}


async def test_keys_are_cached_and_fetched_again_after_their_ttl() -> None:
    clock, provider = FakeClock(), Provider(K1)
    keys = KeySet(provider, ttl_s=300, cooldown_s=30, clock=clock)
    assert (await keys.key("k1")) is not None and provider.fetches == 1
    clock.advance(299)
    await keys.key("k1")
    assert provider.fetches == 1
    provider.keys = [K2]  # the provider stopped publishing k1
    clock.advance(1)
    assert await keys.key("k1") is None  # refetched: a revoked key stops verifying
    assert provider.fetches == 2


async def test_an_unknown_key_id_refetches_at_most_once_per_cooldown() -> None:
    clock, provider = FakeClock(), Provider(K1)
    keys = KeySet(provider, ttl_s=300, cooldown_s=30, clock=clock)
    await keys.key("k1")
    provider.keys = [K1, K2]  # rotated in
    assert await keys.key("k2") is not None and provider.fetches == 2  # at once
    for kid in ("made-up-1", "made-up-2", "made-up-3"):
        assert await keys.key(kid) is None
    assert provider.fetches == 2  # within the cooldown of k2's refetch: none
    clock.advance(30)
    for kid in ("made-up-4", "made-up-5"):
        assert await keys.key(kid) is None
    assert provider.fetches == 3  # one for the two


async def test_requests_for_a_new_key_share_the_fetch_under_way() -> None:
    """Two tokens signed by a key just rotated in: the second must not be refused by the
    cooldown the first one's refetch started."""
    clock, provider = FakeClock(), Provider(K1)
    keys = KeySet(provider, ttl_s=300, cooldown_s=30, clock=clock)
    await keys.key("k1")
    provider.keys, provider.gate = [K1, K2], asyncio.Event()
    first = asyncio.ensure_future(keys.key("k2"))
    second = asyncio.ensure_future(keys.key("k2"))
    await asyncio.sleep(0)
    provider.gate.set()
    assert (await first) is not None and (await second) is not None
    assert provider.fetches == 2


async def test_the_cached_keys_stay_while_the_provider_is_down() -> None:
    clock, provider = FakeClock(), Provider(K1)
    keys = KeySet(provider, ttl_s=300, cooldown_s=30, clock=clock)
    await keys.key("k1")
    provider.down = True
    clock.advance(300)
    assert await keys.key("k1") is not None  # stale, but better than signing everyone out
    clock.advance(10)
    await keys.key("k1")
    assert provider.fetches == 2  # tried again only after the cooldown
    clock.advance(20)
    await keys.key("k1")
    assert provider.fetches == 3
    down = Provider(K1)
    down.down = True
    never = KeySet(down, ttl_s=300, cooldown_s=30, clock=clock)  # nothing ever cached
    for _ in range(3):
        with pytest.raises(KeysUnavailable):  # 503, not "unknown key" (401)
            await never.key("k1")
    assert down.fetches == 1  # not one fetch per request
    down.down = False
    clock.advance(30)
    assert await never.key("k1") is not None and down.fetches == 2


def test_each_key_verifies_with_its_own_algorithm_only() -> None:
    parsed = parse_jwks({"keys": [
        K1, K3,
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},  # a secret: never
        {**K2, "alg": "HS256"},  # an RSA key claiming HMAC: left out
        {**K2, "kid": "enc", "use": "enc"},
        {k: v for k, v in K2.items() if k != "kid"},
        "not a key",
    ]})
    assert {kid: alg for kid, (alg, _) in parsed.items()} == {"k1": "RS256", "e1": "ES256"}
    with pytest.raises(ValueError):
        parse_jwks({"no": "keys"})
