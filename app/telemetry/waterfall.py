"""The request waterfall: the resolver timings a debug request gets back in
`extensions.debug`, built from the request's own spans, and their rendering in a terminal
(`python -m app trace QUERY_FILE`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from app.telemetry.extension import COORDINATE, PATH

RETRIES = "gateway.upstream.retries"
SERVICE = "gateway.upstream.service"


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def _retries(attributes: Mapping[str, Any]) -> int:
    """The retries an upstream call's span records (an int attribute: app/telemetry/observer)."""
    return int(attributes.get(RETRIES, 0))


_BRACKETS = re.compile(r"\[(\d+)\]")


def dotted(path: Any) -> str | None:
    """A span's `topProducts[0].reviews` as the waterfall's rows have always said it:
    `topProducts.0.reviews`."""
    return _BRACKETS.sub(r".\1", path) if isinstance(path, str) else None


def waterfall(spans: Sequence[ReadableSpan]) -> dict[str, list[dict[str, Any]]]:
    """A request's `resolvers` and `upstream` calls, timed from the operation's start."""
    if not spans:
        return {"resolvers": [], "upstream": []}
    operation = [s for s in spans if s.attributes and "graphql.operation.type" in s.attributes]
    began = (operation[0].start_time if operation else None) \
        or min(s.start_time or 0 for s in spans)
    upstream: list[dict[str, Any]] = [
        {"service": a.get(SERVICE), "route": a.get("url.template"),
         "startMs": _ms((s.start_time or 0) - began),
         "durationMs": _ms((s.end_time or 0) - (s.start_time or 0)),
         "retries": _retries(a), "code": a.get("error.type")}
        for s in spans if SERVICE in (a := s.attributes or {})
    ]
    upstream.sort(key=lambda c: c["startMs"])
    return {"resolvers": resolver_rows(spans, began), "upstream": upstream}


def resolver_rows(spans: Sequence[ReadableSpan], began: int) -> list[dict[str, Any]]:
    """One row per traced resolver call: its path, start offset and duration (ms, from
    `began`), the upstream calls it caused (through the batch it started) with their
    retries, and its error class."""
    resolvers = [s for s in spans if s.attributes and COORDINATE in s.attributes]
    children: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None:
            children.setdefault(span.parent.span_id, []).append(span)
    rows = []
    for span in resolvers:
        calls = retries = 0
        stack = list(children.get(span.context.span_id, ()))
        while stack:  # its batches and their calls, not the resolvers nested under it
            child = stack.pop()
            attributes = child.attributes or {}
            if COORDINATE in attributes:
                continue
            if SERVICE in attributes:
                calls += 1
                retries += _retries(attributes)
            stack.extend(children.get(child.context.span_id, ()))
        attributes = span.attributes or {}
        rows.append({
            "path": dotted(attributes.get(PATH)),
            "coordinate": attributes.get(COORDINATE),
            "startMs": _ms((span.start_time or 0) - began),
            "durationMs": _ms((span.end_time or 0) - (span.start_time or 0)),
            "calls": calls,
            "retries": retries,
            "error": attributes.get("error.type"),
        })
    rows.sort(key=lambda r: (r["startMs"], r["path"] or ""))
    return rows


# -- the terminal rendering ----------------------------------------------------------------
_INDEX = re.compile(r"\.\d+(?=\.|$)")
BOLD_RED, RESET = "\x1b[1;31m", "\x1b[0m"


@dataclass
class _Group:
    """The calls of one field across a list: `reviews.[].author` stands for all of them."""

    pattern: str
    start: float
    end: float
    count: int = 0
    calls: int = 0
    retries: int = 0
    errors: set[str] = field(default_factory=set)
    slowest: bool = False


def _pattern(path: str) -> str:
    return _INDEX.sub(".[]", path)


def slowest_path(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The paths of the resolver that finished last and its traced ancestors: the chain that
    set the response time."""
    if not rows:
        return []
    last = max(rows, key=lambda r: r["startMs"] + r["durationMs"])
    by_path = {r["path"]: r for r in rows}
    parts = str(last["path"]).split(".")
    chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [p for p in chain if p in by_path]


def render(payload: dict[str, Any], *, width: int = 100, color: bool = False) -> str:
    """The waterfall of a debug response (`extensions.debug`) as terminal lines."""
    debug = (payload.get("extensions") or {}).get("debug") or {}
    rows: list[dict[str, Any]] = debug.get("resolvers") or []
    upstream: list[dict[str, Any]] = debug.get("upstream") or []
    errors = payload.get("errors") or []
    groups: dict[str, _Group] = {}
    for row in rows:
        key = _pattern(row["path"])
        start, end = row["startMs"], row["startMs"] + row["durationMs"]
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(key, start, end)
        group.start, group.end = min(group.start, start), max(group.end, end)
        group.count += 1
        group.calls += row["calls"]
        group.retries += row["retries"]
        if row["error"]:
            group.errors.add(row["error"])
    for path in slowest_path(rows):
        groups[_pattern(path)].slowest = True
    total = max([g.end for g in groups.values()]
                + [c["startMs"] + c["durationMs"] for c in upstream] + [0.001])
    label_width = min(48, max([2 * g.pattern.count(".") + 12 for g in groups.values()] + [20]))
    bar_width = max(10, width - label_width - 38)

    def bar(start: float, end: float) -> str:
        left = int(start / total * bar_width)
        length = max(1, int((end - start) / total * bar_width))
        return "|" + (" " * left + "#" * length).ljust(bar_width)[:bar_width] + "|"

    def mark(line: str, on: bool) -> str:
        if not on:
            return "  " + line
        return f"{BOLD_RED}> {line}{RESET}" if color else "> " + line

    lines = [
        f"trace {debug.get('traceId', '?')}: {len(rows)} resolver calls, {len(upstream)} "
        f"upstream calls, {sum(c['retries'] for c in upstream)} retries, {len(errors)} errors; "
        f"{total:.1f} ms",
        "",
        "  " + f"{'resolver':<{label_width}} {'start':>7} {'ms':>7} {'calls':>5} {'retry':>5} "
        f"{'':<6}" + f"0 ms{'':>{bar_width - 8}}{total:>5.0f}",
    ]
    for group in sorted(groups.values(), key=lambda g: (g.start, g.pattern)):
        # A tree: each field indented under its parent, `x N` for the calls across a list.
        fields = [p for p in group.pattern.split(".") if p != "[]"]
        label = "  " * (len(fields) - 1) + fields[-1] + (
            f" x{group.count}" if group.count > 1 else "")
        lines.append(mark(
            f"{label[:label_width]:<{label_width}} {group.start:7.1f} "
            f"{group.end - group.start:7.1f} {group.calls:5d} {group.retries:5d} "
            f"{','.join(sorted(group.errors))[:6]:<6}" + bar(group.start, group.end),
            group.slowest))
    if upstream:
        lines += ["", "  " + f"{'upstream call':<{label_width}} {'start':>7} {'ms':>7} "
                  f"{'':>5} {'retry':>5}"]
        for call in sorted(upstream, key=lambda c: c["startMs"]):
            label = f"{call['service']} {call['route']}"
            lines.append(mark(
                f"{label[:label_width]:<{label_width}} {call['startMs']:7.1f} "
                f"{call['durationMs']:7.1f} {'':5} {call['retries']:5d} "
                f"{(call['code'] or '')[:6]:<6}"
                + bar(call["startMs"], call["startMs"] + call["durationMs"]),
                bool(call["code"])))
    slow = slowest_path(rows)
    if slow:
        lines += ["", f"slowest path: {slow[-1]} (ends at "
                  f"{max(r['startMs'] + r['durationMs'] for r in rows):.1f} ms)"]
    for error in errors:
        ext = error.get("extensions") or {}
        lines.append(f"error {ext.get('code')}: {error.get('message')} at "
                     f"{'.'.join(map(str, error.get('path') or []))}")
    return "\n".join(lines)
