"""How a stream of GraphQL results is framed on the wire, for the transports that send
several results in one HTTP response: Server-Sent Events (subscriptions over SSE, and the
parts of an incremental result) and multipart/mixed (the parts of an incremental result).
Payloads are JSON already (orjson never writes a newline, so each is one SSE data line)."""

from __future__ import annotations

# -- Server-Sent Events (GraphQL over SSE, distinct connections mode) ------------------------
SSE_MEDIA_TYPE = b"text/event-stream; charset=utf-8"
SSE_HEADERS = [(b"content-type", SSE_MEDIA_TYPE), (b"cache-control", b"no-cache, no-transform"),
               (b"x-accel-buffering", b"no")]
SSE_COMPLETE = b"event: complete\ndata: \n\n"
SSE_KEEPALIVE = b":\n\n"  # a comment: keeps proxies from closing an idle stream


def sse_next(payload: bytes) -> bytes:
    """One result as a `next` event."""
    return b"event: next\ndata: " + payload + b"\n\n"


# -- multipart/mixed (incremental delivery over HTTP) -----------------------------------------
# The boundary and spec Apollo Client 4 and graphql-js 17's clients read: "-", each part a
# JSON document, `incrementalSpec=v0.2` naming the format of the parts (pending/incremental/
# completed ids, as graphql-js 17 sends them).
BOUNDARY = "-"
INCREMENTAL_SPEC = "v0.2"
MULTIPART_MEDIA_TYPE = f'multipart/mixed; boundary="{BOUNDARY}"; incrementalSpec={INCREMENTAL_SPEC}'
_DELIMITER = b"\r\n--" + BOUNDARY.encode()
MULTIPART_START = _DELIMITER  # (a preamble-free body starts with the first delimiter)
MULTIPART_END = b"--\r\n"  # after the last part's delimiter: the close delimiter (RFC 2046)
_PART_HEADERS = b"\r\nContent-Type: application/json; charset=utf-8\r\n\r\n"


def multipart_part(payload: bytes) -> bytes:
    """One result as a part, ending with the delimiter, so that a reader can hand it on
    as soon as it arrives (not when the next part begins)."""
    return _PART_HEADERS + payload + _DELIMITER
