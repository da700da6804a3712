"""Incremental delivery: the parts of an operation with @defer or @stream, for a client that
accepts them (multipart/mixed, or Server-Sent Events).

The operation runs as any other (the view's persisted queries, limits and cost counted over
the whole document, deferred selections included; the rate limit's charge; auth), on
`IncrementalGatewayExecutor` (app/execution/executor.py) with the request's context and
loaders. Its first part is what is not deferred, answered once it is ready, with the
`pending` parts that follow; each later part carries what completed since, in the format
graphql-js 17 sends and Apollo Client 4 reads (`incrementalSpec=v0.2`):

    {"data": {...}, "pending": [{"id": "0", "path": [...], "label": "..."}], "hasNext": true}
    {"incremental": [{"id": "0", "data": {...}, "errors": [...]}], "completed": [{"id": "0"}],
     "hasNext": false}

A deferred fragment's field errors are in its `incremental` entry, classified like every
other error (`extensions.code`, unexpected exceptions masked); a fragment that could not be
delivered at all (a non-null field of it failed) has its errors in its `completed` entry.

Cache-Control of an incremental answer is `no-store`: its headers leave with the first part,
before the deferred parts exist, so no policy could account for what they will hold (stale
data, a private field, an error); the response cache never stores one either. The same
query asked as plain JSON is answered whole, with the usual policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from graphql import ExperimentalIncrementalExecutionResults, GraphQLError

from app.execution.context import RequestContext
from app.execution.errors import classify_errors
from app.http.framing import (
    MULTIPART_END,
    MULTIPART_START,
    multipart_part,
    sse_next,
)

log = logging.getLogger("gateway.incremental")
INCREMENTAL_CACHE_CONTROL = "no-store"
_INTERNAL = {"message": "Internal server error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}


def first_payload(results: ExperimentalIncrementalExecutionResults, *,
                  hide_suggestions: bool) -> dict[str, Any]:
    """The first part as sent over SSE (the HTTP view builds its own, with its headers)."""
    initial = results.initial_result
    if initial.errors:
        classify_errors(initial.errors, hide_suggestions=hide_suggestions)
    return dict(initial.formatted)


def _classify(errors: list[GraphQLError] | None, hide_suggestions: bool,
              context: RequestContext | None) -> bool:
    if not errors:
        return False
    classify_errors(errors, hide_suggestions=hide_suggestions)
    if context is not None:
        # The request's codes, later parts' too: the SLO tells the client's own (a deferred
        # FORBIDDEN) from a server-side failure by them (app/telemetry/requests.py).
        context.error_codes = context.error_codes.union(
            str((e.extensions or {}).get("code")) for e in errors)
    return True


async def later_payloads(results: ExperimentalIncrementalExecutionResults,
                         context: RequestContext | None, *,
                         hide_suggestions: bool) -> AsyncGenerator[dict[str, Any], None]:
    """The parts after the first, formatted, their errors classified. The request's outcome
    becomes `partial` when one has errors. Closing this iterator (the client left) stops
    the work still running for the parts not sent."""
    pending = {p.id for p in results.initial_result.pending}
    stream = results.subsequent_results
    try:
        async for value in stream:
            pending.update(p.id for p in value.pending or ())
            failed = False
            for entry in value.incremental or ():
                failed = _classify(entry.errors, hide_suggestions, context) or failed
            for done in value.completed or ():
                pending.discard(done.id)
                failed = _classify(done.errors, hide_suggestions, context) or failed
            if failed and context is not None and context.outcome == "ok":
                context.outcome = "partial"
            yield dict(value.formatted)
    except Exception:
        # (graphql-core reports field errors in the parts: this is a bug of ours.) The
        # client is told that what it still waits for will not come, and why.
        log.exception("incremental delivery failed")
        if context is not None:
            context.outcome = "error"
        yield {"completed": [{"id": i, "errors": [_INTERNAL]} for i in sorted(pending)],
               "hasNext": False}
    finally:
        await stream.aclose()


async def discard(results: ExperimentalIncrementalExecutionResults) -> None:
    """Stop the deferred work of an answer whose later parts were never asked for (the
    client left before its first part went out). graphql-core cancels that work when its
    stream of parts is closed once started (a stream never started runs no `finally`), so
    it is started and cancelled at once. Harmless on a stream already closed or ended."""
    stream = results.subsequent_results
    step = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)  # (into the stream, up to its first wait)
    step.cancel()
    with contextlib.suppress(BaseException):
        await step
    with contextlib.suppress(Exception):
        await stream.aclose()


async def multipart_body(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]
                         ) -> AsyncIterator[bytes]:
    """The body of a multipart/mixed answer: each part as soon as it is ready."""
    yield MULTIPART_START + multipart_part(orjson.dumps(first))
    async for payload in rest:
        yield multipart_part(orjson.dumps(payload))
    yield MULTIPART_END


async def event_stream_body(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]
                            ) -> AsyncIterator[bytes]:
    """The same parts as `next` events (the caller sends `complete` after them)."""
    yield sse_next(orjson.dumps(first))
    async for payload in rest:
        yield sse_next(orjson.dumps(payload))
