"""A load generator that does nothing else: N keep-alive connections, each sending its next
request as soon as the previous answer arrives, for a fixed time or count.

Run as its own process (pinned away from the gateway's core) by `bench/run.py`:
    python -m bench.loadgen URL WORKLOAD --concurrency 32 --seconds 5
It prints one JSON object: counts, elapsed time and latency percentiles in milliseconds.
`failures` counts answers other than 200, requests that got no answer, and refused
connection attempts (which are not requests, so failures may exceed requests).

It shares a core with the reference services, so its own cost per request bounds what a
fast path (a response-cache hit) can show. Hence raw HTTP/1.1 on asyncio protocols under
uvloop, parsed by httptools, each request written as one buffer, and a response's JSON
decoded only when it carries `errors` (to tell partial answers from failed ones): about a
tenth of an aiohttp client's CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson
import uvloop

from bench.workloads import EXTRA_WORKLOADS, WORKLOADS

ALL_WORKLOADS = {**WORKLOADS, **EXTRA_WORKLOADS}
ERRORS_KEY = b'"errors":'  # only a key can hold an unescaped quote-colon sequence
REQUEST_TIMEOUT_S = 60.0  # an answer later than this counts as a failure


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = False  # closed, or closing after this answer (`Connection: close`)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._finish(err)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._finish(exc or ConnectionResetError("connection closed"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if not self.parser.should_keep_alive():
            self.lost = True
        body, self.body = b"".join(self.body), []
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))

    def _finish(self, err: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(err)

    def _timed_out(self) -> None:
        self.lost = True
        self._finish(TimeoutError("no answer in time"))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.transport is None or self.lost or self.transport.is_closing():
            # Closed by the server without notice (no `Connection: close`): a failure, and
            # the worker reconnects.
            raise ConnectionResetError("connection closed")
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.transport.write(request)
        timer = loop.call_later(REQUEST_TIMEOUT_S, self._timed_out)
        try:
            return await self.waiter
        finally:
            timer.cancel()


def prepare(host: str, path: str, workload: str, index: int) -> bytes:
    """The whole HTTP request for one index of a workload, as bytes on the wire."""
    query, variables, headers = ALL_WORKLOADS[workload].make(index)
    body = orjson.dumps({"query": query, "variables": variables})
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def run(
    url: str, workload: str, concurrency: int, seconds: float, max_requests: int | None,
    start_index: int, cycle: int | None = None,
) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = f"{host}:{port}"
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failures = 0
    errors = 0
    partial = 0  # responses with errors that still carry data
    first_error: str | None = None  # what the first failure or error answer said, for a report
    counter = start_index
    deadline = time.perf_counter() + seconds

    async def connect() -> Connection | None:
        """A new connection; a refused one counts as a failed request, retried shortly."""
        nonlocal failures
        while time.perf_counter() < deadline:
            try:
                _, conn = await loop.create_connection(Connection, host, port)
                return conn
            except OSError:
                failures += 1
                await asyncio.sleep(0.05)
        return None

    async def worker() -> None:
        nonlocal counter, failures, errors, partial, first_error
        conn = await connect()
        if conn is None:
            return
        try:
            while time.perf_counter() < deadline:
                if max_requests is not None and counter - start_index >= max_requests:
                    return
                i = counter
                counter += 1
                # A cycle repeats a working set of requests (warm-cache runs).
                index = i if cycle is None else start_index + (i - start_index) % cycle
                # Built anew each time: a repeated placeOrder still needs a new idempotency key.
                request = prepare(authority, path, workload, index)
                started = time.perf_counter()
                try:
                    status, raw = await conn.send(request)
                except (OSError, TimeoutError, RuntimeError, httptools.HttpParserError):
                    # RuntimeError: uvloop's write to a transport closed meanwhile.
                    status, raw = 0, b""
                latencies.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    failures += 1
                    if first_error is None:
                        first_error = f"HTTP {status}: {raw[:300]!r}"
                elif ERRORS_KEY in raw:
                    answer = orjson.loads(raw)
                    if answer.get("errors"):
                        errors += 1
                        if first_error is None:
                            first_error = orjson.dumps(answer["errors"][:2]).decode()[:300]
                        if answer.get("data"):
                            partial += 1
                if conn.lost or status == 0:
                    conn.transport.close()  # type: ignore[union-attr]
                    reconnected = await connect()
                    if reconnected is None:
                        return
                    conn = reconnected
        finally:
            conn.transport.close()  # type: ignore[union-attr]

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "failures": failures,
        "responses_with_errors": errors,
        "first_error": first_error,
        "partial_responses": partial,
        "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 0.50),
        "p95_ms": percentile(latencies, 0.95),
        "p99_ms": percentile(latencies, 0.99),
        "next_index": counter,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("url")
    parser.add_argument("workload", choices=sorted(ALL_WORKLOADS))
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=None, help="stop after this many")
    parser.add_argument("--start-index", type=int, default=0)
    parser.add_argument("--cycle", type=int, default=None,
                        help="repeat the requests of this many indexes from --start-index")
    args = parser.parse_args(argv)
    result = uvloop.run(
        run(args.url, args.workload, args.concurrency, args.seconds, args.requests,
            args.start_index, args.cycle)
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
