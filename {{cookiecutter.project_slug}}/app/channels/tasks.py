"""Stopping background tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object] | None], timeout: float = 5.0) -> None:
    """Cancel ``tasks`` and wait for them to end, at most ``timeout`` seconds: a client library that
    swallows a cancellation must not hang a shutdown. Their exceptions are consumed, not logged."""
    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    if not pending:
        return
    await asyncio.wait(pending, timeout=timeout)
    for task in pending:
        if task.done() and not task.cancelled():
            task.exception()
