"""Child processes that end with their parent."""

from __future__ import annotations

import ctypes
import signal


def die_with_parent() -> None:
    """A `preexec_fn`: on Linux the child gets SIGTERM when its parent dies (a gateway's
    supervisor, a test run), so no server outlives the process that started it."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
