"""A hostile client's tools: raw sockets that send exactly the bytes a probe needs (part of a
request, a trickle, a huge header), read what the gateway answers and see whether it closed
the connection; and the gateway's memory, read from /proc."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import Gateway

# Hang guards only: the probes wait for the gateway's answer or its close, never for a time.
GUARD_S = 30.0


@dataclass
class Reply:
    """What came back on a connection until the gateway closed it."""

    raw: bytes
    closed: bool  # the gateway closed the connection (EOF or reset)

    @property
    def status(self) -> int | None:
        if not self.raw.startswith(b"HTTP/1.1 "):
            return None
        return int(self.raw[9:12])

    @property
    def headers(self) -> dict[str, str]:
        head = self.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}

    @property
    def body(self) -> Any:
        return json.loads(self.raw.split(b"\r\n\r\n", 1)[1])


class Conn:
    """One TCP connection to the gateway."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.sent = 0

    @classmethod
    async def open(cls, gateway: Gateway) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> bool:
        """False once the gateway has closed the connection."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            return False
        self.sent += len(data)
        return True

    async def trickle(self, data: bytes, every_s: float = 0.2) -> None:
        """Send `data` a byte at a time, until it is all sent or the connection is closed."""
        for i in range(len(data)):
            if not await self.send(data[i:i + 1]):
                return
            await asyncio.sleep(every_s)

    async def reply(self, guard_s: float = GUARD_S) -> Reply:
        """Everything the gateway sends until it closes the connection."""
        chunks = []
        async with asyncio.timeout(guard_s):  # (TimeoutError is an OSError: not caught below)
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except ConnectionError:  # reset: closed all the same
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        return Reply(b"".join(chunks), closed=True)

    async def response(self, guard_s: float = GUARD_S) -> Reply:
        """One response (headers and a Content-Length body), leaving the connection open."""
        async with asyncio.timeout(guard_s):
            head = await self.reader.readuntil(b"\r\n\r\n")
            reply = Reply(head, closed=False)
            body = await self.reader.readexactly(int(reply.headers.get("content-length", 0)))
        return Reply(head + body, closed=False)

    def close(self) -> None:
        self.writer.close()


def request(method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body and not any(k.lower() in ("content-length", "transfer-encoding")
                        for k in headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def graphql_request(query: str = "{ categories { id } }",
                    headers: dict[str, str] | None = None) -> bytes:
    body = json.dumps({"query": query}).encode()
    return request("POST", "/graphql", {"Content-Type": "application/json", **(headers or {})},
                   body)


def memory_kb(gateway: Gateway, field: str) -> int:
    """VmRSS (now) or VmHWM (the peak) of the gateway process, in kB."""
    for line in Path(f"/proc/{gateway.process.proc.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def reset_peak(gateway: Gateway) -> None:
    """Start VmHWM over from the current RSS (Linux: clear_refs 5)."""
    Path(f"/proc/{gateway.process.proc.pid}/clear_refs").write_text("5")
