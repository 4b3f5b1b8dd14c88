"""What the host lets one server of many sockets do: open files and the listen queue (docs/scaling.md).

Every WebSocket client is a file descriptor. Container runtimes start processes with a soft limit of
1024 open files (the hard one is 524288 or more), which refuses about the 1,000th client of a worker
with EMFILE. The soft limit may be raised up to the hard one without privilege: the gunicorn master
does it at start (gunicorn.conf.py ``on_starting``), and the workers it forks inherit it.
"""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


def raise_open_file_limit() -> tuple[int, int, int]:
    """``(before, after, hard)``: the soft RLIMIT_NOFILE raised to the hard one; left where the OS refuses
    (macOS caps an unlimited hard limit lower), the caller says so."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if before != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    after = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return before, after, hard


def listen_queue_cap() -> int | None:
    """``net.core.somaxconn`` of this network namespace: the kernel silently shortens a longer backlog to it."""
    try:
        return int(SOMAXCONN.read_text())
    except (OSError, ValueError):  # not Linux
        return None
