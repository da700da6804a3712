"""The lockstep loader: hits keep pace with the batch in flight; batches split at their size."""

from __future__ import annotations

import asyncio

from loaders.registry import LockstepLoader
from tests.fakeclock import settle
from tests.unit.helpers import Upstream


async def test_a_hit_made_while_a_batch_is_queued_resolves_with_that_batch() -> None:
    upstream = Upstream(a="A", b="B")
    loader = LockstepLoader(upstream.fetch)
    assert await loader.load("a") == "A"  # now a hit
    upstream.hold = True
    miss = loader.load("b")  # queued
    hit = loader.load("a")
    assert not hit.done()  # a plain DataLoader would have resolved it at once
    await settle()
    assert upstream.calls == [["a"], ["b"]]  # the hit was not fetched again
    assert not hit.done() and not miss.done()  # the batch is in flight: both wait
    # When the batch's own key resolves, the hit has resolved already (same turn).
    hit_done_then: list[bool] = []
    miss.add_done_callback(lambda _: hit_done_then.append(hit.done()))
    upstream.release()
    assert await miss == "B"
    assert hit_done_then == [True]
    assert hit.result() == "A"


async def test_a_hit_with_no_batch_pending_resolves_at_once() -> None:
    upstream = Upstream(a="A")
    loader = LockstepLoader(upstream.fetch)
    await loader.load("a")
    hit = loader.load("a")
    assert hit.done() and hit.result() == "A"


async def test_a_hit_waiting_on_a_failed_batch_still_gets_its_value() -> None:
    upstream = Upstream(a="A")
    loader = LockstepLoader(upstream.fetch)
    await loader.load("a")
    upstream.hold = True
    upstream.error = RuntimeError("down")
    miss = loader.load("b")
    hit = loader.load("a")
    await settle()
    upstream.release()
    assert await hit == "A"
    try:
        await miss
    except RuntimeError:
        pass
    else:
        raise AssertionError("the failed batch's key should fail")


async def test_batches_split_at_max_batch_size() -> None:
    upstream = Upstream(**{k: k.upper() for k in "abcde"})
    loader = LockstepLoader(upstream.fetch, max_batch_size=2)
    values = await asyncio.gather(*(loader.load(k) for k in "abcde"))
    assert values == ["A", "B", "C", "D", "E"]
    assert upstream.calls == [["a", "b"], ["c", "d"], ["e"]]


async def test_loads_in_one_tick_share_a_batch_and_duplicates_are_fetched_once() -> None:
    upstream = Upstream(a="A", b="B")
    loader = LockstepLoader(upstream.fetch)
    values = await asyncio.gather(loader.load("a"), loader.load("b"), loader.load("a"))
    assert list(values) == ["A", "B", "A"]  # (a list at run time, typed as a tuple)
    assert upstream.calls == [["a", "b"]]
