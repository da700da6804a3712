"""bench/RESULTS.md is written by several commands: each owns one `## ` section of it."""

from __future__ import annotations

from pathlib import Path


def section(text: str, title: str) -> str:
    """The `## title` section of `text` (from its heading to the next one), or ''."""
    marker = f"\n## {title}\n"
    if marker not in text:
        return ""
    rest = text.split(marker, 1)[1]
    return marker + (rest[: rest.index("\n## ")] if "\n## " in rest else rest)


def replace_section(path: Path, title: str, body: str) -> None:
    """Write `body` as the `## title` section of `path`, in place of any earlier one."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    text = text.replace(section(text, title), "")
    path.write_text(text.rstrip("\n") + f"\n\n## {title}\n\n" + body.strip("\n") + "\n")
