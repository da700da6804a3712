"""The wire framing of several results in one HTTP answer (app/http/framing.py), the parts of
an incremental result (app/http/incremental.py) and who accepts them (negotiation): checked
against independent readers (Python's email parser for multipart/mixed) and a real
graphql-core incremental execution."""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from graphql import (
    ExperimentalIncrementalExecutionResults,
    build_schema,
    experimental_execute_incrementally,
    parse,
)

from app.core.errors import Forbidden
from app.http.framing import (
    MULTIPART_MEDIA_TYPE,
    SSE_COMPLETE,
    multipart_part,
    sse_next,
)
from app.http.incremental import discard, event_stream_body, later_payloads, multipart_body
from app.http.negotiation import accepts_incremental


async def _listed(items: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item


async def _body(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


def _decoded(part: email.message.Message) -> bytes:
    payload = part.get_payload(decode=True)  # bytes for a part that is not multipart
    assert isinstance(payload, bytes), payload
    return payload


async def test_multipart_body_reads_back_with_a_mime_parser() -> None:
    first = {"data": {"a": 1}, "pending": [{"id": "0", "path": []}], "hasNext": True}
    rest = [{"incremental": [{"id": "0", "data": {"b": "line\nbreak --- \r\n--"}}],
             "completed": [{"id": "0"}], "hasNext": False}]
    chunks = await _body(multipart_body(first, _listed(rest)))
    assert len(chunks) == 3  # each part is sent on its own, then the close delimiter
    raw = b"Content-Type: " + MULTIPART_MEDIA_TYPE.encode() + b"\r\n\r\n" + b"".join(chunks)
    message = email.message_from_bytes(raw, policy=email.policy.HTTP)
    assert message.is_multipart() and not message.defects
    parts = [orjson.loads(_decoded(part)) for part in message.iter_parts()]
    assert parts == [first, *rest]
    assert all(part.get_content_type() == "application/json" for part in message.iter_parts())


def test_a_part_ends_with_the_delimiter_so_it_is_read_on_arrival() -> None:
    assert multipart_part(b"{}").endswith(b"\r\n---")
    assert b"\r\n\r\n{}" in multipart_part(b"{}")


async def test_sse_parts_are_next_events_of_one_data_line() -> None:
    chunks = await _body(event_stream_body({"data": {"s": "a\nb"}, "hasNext": True},
                                           _listed([{"hasNext": False}])))
    assert chunks == [sse_next(b'{"data":{"s":"a\\nb"},"hasNext":true}'),
                      sse_next(b'{"hasNext":false}')]
    assert chunks[0].count(b"\n") == 3  # event line, data line, blank line
    assert SSE_COMPLETE == b"event: complete\ndata: \n\n"


@pytest.mark.parametrize(("accept", "accepted"), [
    ("multipart/mixed;incrementalSpec=v0.2,application/graphql-response+json,"
     "application/json;q=0.9", True),  # Apollo Client 4 (GraphQL17Alpha9Handler)
    ("multipart/mixed", True),
    ('multipart/mixed; incrementalSpec="v0.2"; q=0.5', True),
    ("multipart/mixed;deferSpec=20220824,application/json", False),  # Apollo Client 3
    ("multipart/mixed;subscriptionSpec=1.0,application/json", False),
    ("multipart/mixed;incrementalSpec=v0.1", False),
    ("multipart/mixed;q=0", False),
    ("application/json", False),
    ("", False),
])
def test_who_accepts_incremental_delivery(accept: str, accepted: bool) -> None:
    assert accepts_incremental(accept) is accepted


SCHEMA = build_schema("""
directive @defer(label: String, if: Boolean! = true) on FRAGMENT_SPREAD | INLINE_FRAGMENT
type Query { fast: String, denied: String, broken: String, slow: String }
""")


class _Context:
    outcome = "ok"
    error_codes: frozenset[str] = frozenset()


async def _run(query: str, root: dict[str, Any], *,
               enable_early_execution: bool = False) -> ExperimentalIncrementalExecutionResults:
    result = experimental_execute_incrementally(SCHEMA, parse(query), root_value=root,
                                                enable_early_execution=enable_early_execution)
    results = await result if asyncio.iscoroutine(result) else result
    assert isinstance(results, ExperimentalIncrementalExecutionResults), results
    return results


async def test_later_parts_have_their_errors_classified_and_mark_the_outcome() -> None:
    def denied(_info: Any) -> str:
        raise Forbidden("not yours")

    def broken(_info: Any) -> str:
        raise KeyError("a bug")

    results = await _run('{ fast ... @defer(label: "d") { denied broken } }',
                         {"fast": "x", "denied": denied, "broken": broken})
    context = _Context()
    parts = [part async for part in later_payloads(results, context,  # type: ignore[arg-type]
                                                   hide_suggestions=False)]
    entry = parts[-1]["incremental"][0]
    by_path = {e["path"][0]: e for e in entry["errors"]}
    assert by_path["denied"]["extensions"]["code"] == "FORBIDDEN"
    assert by_path["denied"]["message"] == "not yours"
    # An unexpected exception is masked, as in any answer.
    assert by_path["broken"]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert by_path["broken"]["message"] == "Internal server error"
    assert context.outcome == "partial"
    # The later parts' codes are the request's too (the SLI's client or server fault).
    assert context.error_codes == {"FORBIDDEN", "INTERNAL_SERVER_ERROR"}


async def test_closing_the_parts_stops_the_deferred_work() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(_info: Any) -> str:
        started.set()
        try:
            await asyncio.Event().wait()  # never answers
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    results = await _run("{ fast ... @defer { slow } }", {"fast": "x", "slow": slow})
    parts = later_payloads(results, None, hide_suggestions=False)
    waiting = asyncio.ensure_future(parts.__anext__())
    await asyncio.wait_for(started.wait(), 5)
    waiting.cancel()  # the client left
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await parts.aclose()
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_discarding_parts_never_asked_for_stops_the_deferred_work() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(_info: Any) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    # Early execution: the deferred field runs before anyone asks for its part.
    results = await _run("{ fast ... @defer { slow } }", {"fast": "x", "slow": slow},
                         enable_early_execution=True)
    await asyncio.wait_for(started.wait(), 5)
    await discard(results)  # the client left before the first part went out
    await asyncio.wait_for(cancelled.wait(), 5)
    await discard(results)  # (twice is harmless)
