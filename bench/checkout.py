"""An earlier commit beside this checkout, for the benches that compare the two in one run."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def short(rev: str) -> str:
    """`rev`'s short hash (HEAD: this checkout's commit)."""
    return subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


@contextmanager
def checkout(rev: str, into: Path) -> Iterator[Path]:
    """`rev` checked out at `into` (a temporary git worktree, removed afterwards), so that
    its gateway runs with `start_gateway(..., root=into)`."""
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(into), rev], cwd=ROOT,
                   check=True)
    try:
        yield into
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(into)], cwd=ROOT,
                       check=False)
