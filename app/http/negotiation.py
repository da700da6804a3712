"""GraphQL over HTTP, before GraphQL runs: the body's limit and media type, the answer's
media type (from Accept), and the JSON error shape of a request refused at this level."""

from __future__ import annotations

from functools import lru_cache

import orjson
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope

from app.core.errors import HTTPRefusal, http_refusal_body
from app.telemetry.tracing import trace_id_of

POST_MEDIA_TYPES = frozenset({"application/json"})  # (no multipart uploads in this graph)
# GraphQL over HTTP: the answer's media type. The newer one has status codes that say what
# happened (400 for a request that never ran); plain JSON is always 200 (legacy clients).
GRAPHQL_RESPONSE = "application/graphql-response+json"
LEGACY_JSON = "application/json"


# Pure functions of the Accept header's text, which clients send in a handful of spellings:
# each spelling is parsed once (bounded: a client cannot grow the caches).
@lru_cache(maxsize=256)
def answer_media_type(accept: str | None) -> str:
    """The media type to answer in: application/graphql-response+json when the client's
    Accept prefers it (or ranks it with plain JSON), else application/json, which is also the
    answer to no Accept at all (clients older than the specification)."""
    if not accept:
        return LEGACY_JSON
    ranks: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        ranks[media.lower()] = max(weight, ranks.get(media.lower(), 0.0))
    preferred = ranks.get(GRAPHQL_RESPONSE, 0.0)
    return GRAPHQL_RESPONSE if preferred > 0 and preferred >= ranks.get(LEGACY_JSON, 0.0) \
        else LEGACY_JSON


@lru_cache(maxsize=256)
def wants_event_stream(accept: str) -> bool:
    """Whether the client asks for Server-Sent Events (a subscription, or any operation,
    over GraphQL over SSE: app/http/subscriptions.py)."""
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() == "text/event-stream" and not any(
                p.replace(" ", "") in ("q=0", "q=0.0") for p in params):
            return True
    return False


def _media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """Accept's media ranges, lower-cased, with their parameters (quotes taken off), less
    those the client refuses (q=0)."""
    ranges: list[tuple[str, dict[str, str]]] = []
    for item in accept.split(","):
        media, *raw = (part.strip() for part in item.split(";"))
        params: dict[str, str] = {}
        for param in raw:
            key, _, value = param.partition("=")
            params[key.strip().lower()] = value.strip().strip('"\'')
        if params.get("q", "1").rstrip("0").rstrip(".") in ("0", ""):
            continue
        ranges.append((media.lower(), params))
    return ranges


@lru_cache(maxsize=256)
def accepts_incremental(accept: str) -> bool:
    """Whether the client reads incremental delivery as multipart/mixed in the format this
    gateway sends (graphql-js 17's, `incrementalSpec=v0.2`, what Apollo Client 4 asks for).
    A client that names another format only (Apollo Client 3's `deferSpec=20220824`) does
    not: it gets the whole result in one JSON answer, which it reads as well."""
    for media, params in _media_ranges(accept):
        if media != "multipart/mixed":
            continue
        spec = params.get("incrementalspec")
        if spec is not None:
            if spec == "v0.2":
                return True
        elif "deferspec" not in params and "subscriptionspec" not in params:
            return True
    return False


def accept_of(request: Request) -> str:
    """Every Accept header of the request, as one list (a client may send several)."""
    return ",".join(request.headers.getlist("accept"))


def too_large(limit: int) -> HTTPRefusal:
    # Answered at once; the rest of the body, if the client goes on sending it, is read and
    # dropped (never kept) until it ends or BODY_TIMEOUT_S: closing now would reset the
    # connection under the client's upload, and it could lose this answer.
    return HTTPRefusal(413, f"The request body is over {limit} bytes", "PAYLOAD_TOO_LARGE")


def check_length(request: Request, limit: int) -> None:
    """Refuse a body whose declared length is over the limit, before reading it. (The HTTP
    parser refuses a Content-Length that is not a number; this does not rely on it.)"""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    declared = declared.strip()
    if not (declared.isascii() and declared.isdigit()):
        raise HTTPRefusal(400, "Content-Length must be a number of bytes", "BAD_REQUEST")
    if len(declared) > 18 or int(declared) > limit:
        raise too_large(limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, at most `limit` bytes: refused (413) on its declared length before
    any of it is read, and as soon as more than `limit` has arrived (chunked, or longer than
    it said), so that a big body is never held in memory."""
    check_length(request, limit)
    chunks: list[bytes] = []
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def media_type_of(request: Request) -> str:
    """The Content-Type's media type, lower-cased (media types are case-insensitive)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def check_media_type(request: Request) -> None:
    # GraphQL over HTTP: a POST body is JSON (multipart for uploads); anything else is 415,
    # not Strawberry's 400.
    if request.method != "POST":
        return
    if media_type_of(request) not in POST_MEDIA_TYPES:
        raise HTTPRefusal(415, "A POST body must be application/json", "UNSUPPORTED_MEDIA_TYPE")


def normalized(scope: Scope) -> Scope:
    """The scope with its Content-Type's media type lower-cased: Strawberry compares it as
    written, and refused `APPLICATION/JSON`, which is the same media type."""
    headers = scope["headers"]
    if not any(name == b"content-type" and value != value.lower() for name, value in headers):
        return scope
    return {**scope, "headers": [
        (name, value.lower() if name == b"content-type" else value) for name, value in headers]}


def bounded(receive: Receive, limit: int) -> Receive:
    """`receive`, refusing a body (chunked, or longer than it said) past the limit."""
    seen = 0

    async def bounded_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(limit)
        return message

    return bounded_receive


def refusal(request: Request, error: HTTPException) -> Response:
    """The answer to a request refused before GraphQL ran: the same JSON error shape, with a
    code (and the trace id), as every other error; Strawberry would answer in plain text."""
    if (error.status_code == 400 and request.method == "GET"
            and "mutations are not allowed" in error.reason):
        # GraphQL over HTTP: a mutation over GET is 405 (Strawberry says 400).
        error = HTTPRefusal(405, "Mutations must be sent with POST",
                            "METHOD_NOT_ALLOWED", headers={"Allow": "POST"})
    body = http_refusal_body(error)
    trace_id = trace_id_of()
    if trace_id:
        for item in body["errors"]:
            item["extensions"]["traceId"] = trace_id
    return Response(orjson.dumps(body), headers=getattr(error, "headers", None),
                    status_code=error.status_code,
                    media_type=answer_media_type(accept_of(request)))
