"""A request leaves no cyclic garbage: its result, context and loaders are freed by
reference counting as soon as it is answered, so the cycle collector has nothing to walk
under load (its passes stop the event loop) and memory does not wait for it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.telemetry.conftest import DEEP, post

PRODUCT = '{ product(id: "p12") { id name inStock reviews(first: 3) { id author { id } } } }'


def fresh_garbage() -> list[Any]:
    """Free what the collector found so far, then keep what it finds next for inspection
    (saved objects that were only cyclic would otherwise be found again and again)."""
    gc.set_debug(0)
    gc.garbage.clear()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    return gc.garbage


@pytest.fixture
def collections_by_hand() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("settings", [
    {},                                            # cold
    {"CACHE_ENABLED": "true"},                     # through the entity cache
    {"OTEL_TRACES_SAMPLER_ARG": "1.0", "OTEL_TRACES_EXPORTER": "console",
     "TRACE_ALL_FIELDS": "true"},                  # every resolver traced
])
async def test_requests_leave_no_cyclic_garbage(
    launch: Any, http_session: aiohttp.ClientSession, collections_by_hand: None,
    settings: dict[str, str], capsys: pytest.CaptureFixture[str],
) -> None:
    gw = await launch(**settings)
    for query in (DEEP, PRODUCT, DEEP):  # warm up: each document's first validation, caches
        assert (await post(http_session, gw.url, query))[0] == 200
    saved_garbage = fresh_garbage()
    requests = 20
    for i in range(requests):
        status, body = await post(http_session, gw.url, DEEP if i % 2 else PRODUCT)
        assert status == 200 and "errors" not in body
    gc.collect()
    kinds = sorted({type(o).__qualname__ for o in saved_garbage})
    # Before the executor and the loaders broke their cycles: about 600 objects a request.
    assert len(saved_garbage) < requests, kinds[:20]
    capsys.readouterr()  # (the console exporter's spans)

