"""A reader of incremental answers (multipart/mixed and SSE) for the tests, written from the
specifications (RFC 2046's delimiters; the SSE event format), not from the gateway's code:
it hands on each part as soon as its closing delimiter has arrived."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from copy import deepcopy
from typing import Any

import aiohttp

MULTIPART = "multipart/mixed;incrementalSpec=v0.2, application/json;q=0.9"
EVENT_STREAM = "text/event-stream"


async def multipart_parts(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    content_type = resp.headers["content-type"]
    assert content_type.startswith("multipart/mixed"), content_type
    boundary = content_type.split('boundary="', 1)[1].split('"', 1)[0]
    delimiter = b"\r\n--" + boundary.encode()
    buffer = b""
    started = False
    async for chunk in resp.content.iter_any():
        buffer += chunk
        while True:
            at = buffer.find(delimiter)
            if at < 0:
                break
            part, buffer = buffer[:at], buffer[at + len(delimiter):]
            if started:
                headers, _, body = part.partition(b"\r\n\r\n")
                assert b"content-type: application/json" in headers.lower(), headers
                yield json.loads(body)
            started = True
        if started and buffer.startswith(b"--"):
            return  # the close delimiter
    raise AssertionError(f"the multipart body ended without its close delimiter: {buffer!r}")


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    assert resp.headers["content-type"].startswith("text/event-stream")
    buffer = b""
    async for chunk in resp.content.iter_any():
        buffer += chunk
        while b"\n\n" in buffer:
            raw, buffer = buffer.split(b"\n\n", 1)
            event, data = "message", []
            for line in raw.decode().split("\n"):
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
            if raw.startswith(b":"):
                continue
            yield event, "\n".join(data)


def merged(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole result the parts make: each deferred fragment's data and each stream's
    items put at their pending path (as a client does)."""
    data = deepcopy(parts[0].get("data"))
    pending: dict[str, list[Any]] = {}
    errors = list(parts[0].get("errors") or [])
    for part in parts:
        for p in part.get("pending") or []:
            pending[p["id"]] = p["path"]
        for entry in part.get("incremental") or []:
            path = pending[entry["id"]] + list(entry.get("subPath") or [])
            target: Any = data
            for key in path:
                target = target[key]
            if "items" in entry:
                target.extend(entry["items"])
            else:
                _merge(target, entry["data"])
            errors.extend(entry.get("errors") or [])
        for done in part.get("completed") or []:
            errors.extend(done.get("errors") or [])
    return {"data": data, **({"errors": errors} if errors else {})}


def _merge(target: dict[str, Any], data: dict[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
