"""The gateway's idempotency keys in process (app/security/idempotency.py): a key is claimed
once, a claim is replaced only by whoever holds it, and claims expire and stay bounded."""

from __future__ import annotations

from dataclasses import replace

from app.security.idempotency import Claim, IdempotencyStore
from tests.fakeclock import FakeClock


async def test_a_key_is_claimed_once_and_replaced_only_by_its_holder() -> None:
    store = IdempotencyStore(None, "gw", ttl_s=60, clock=FakeClock())
    first, second = Claim("fp", "a", store.now()), Claim("fp", "b", store.now())
    assert await store.claim("k", first) == (first, True)
    assert await store.claim("k", second) == (first, False)
    assert not await store.replace("k", second, None)  # b does not hold it
    done = replace(first, result={"id": "r1"})
    assert await store.replace("k", first, done)
    assert await store.claim("k", second) == (done, False)
    assert await store.replace("k", done, None)  # released: free again
    assert await store.claim("k", second) == (second, True)


async def test_claims_expire_after_their_ttl_and_stay_bounded() -> None:
    clock = FakeClock()
    store = IdempotencyStore(None, "gw", ttl_s=60, max_local=3, clock=clock)
    claim = Claim("fp", "a", clock.time())
    await store.claim("k", claim)
    clock.advance(59)
    assert (await store.claim("k", replace(claim, owner="b")))[1] is False
    clock.advance(1)
    assert (await store.claim("k", replace(claim, owner="b")))[1] is True
    for n in range(10):
        await store.claim(f"other-{n}", claim)
    assert len(store._local) == 3
