"""Receives of named channels: the process reads a named channel from the broker only while a
``receive()`` waits for it, so a message goes to a process that is waiting, not to one that left.

One fetch at a time per channel, however many receivers wait; each fetch is a backend read
bounded by ``receive_timeout``. When the last waiting receiver leaves (cancelled, timed out), the
fetch is cancelled too, on backends whose reads are cancel-safe in order (``named_reads_cancel_safe``:
what a read had taken goes back to the head of the channel, and the next read first waits for that,
``_settle``). Elsewhere the read runs out, bounded by ``receive_timeout``. A message that arrived
just as its receiver left waits here for the next ``receive()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

from .exceptions import ConfigurationError

logger = logging.getLogger("app.channels")

_Entry = tuple[float, dict[str, Any]]


class NamedChannels:
    def __init__(self, fetch: Callable[[str], Awaitable[bytes | None]], settle: Callable[[], Awaitable[None]],
                 loads: Callable[[bytes], _Entry], check_open: Callable[[], None],
                 on_expired: Callable[[], None], *, cancel_safe: bool) -> None:
        self._fetch, self._settle, self._loads, self._cancel_safe = fetch, settle, loads, cancel_safe
        self._check_open, self._on_expired = check_open, on_expired
        self._buffers: dict[str, deque[_Entry]] = {}
        self._fetchers: dict[str, asyncio.Task[None]] = {}
        self._waiting: Counter[str] = Counter()

    async def receive(self, channel: str) -> dict[str, Any]:
        buffer = self._buffers.setdefault(channel, deque())
        self._waiting[channel] += 1
        try:
            while True:
                while buffer:
                    expires_at, message = buffer.popleft()
                    if expires_at >= time.time():
                        return message
                    self._on_expired()
                fetcher = self._fetchers.get(channel)
                if fetcher is None or fetcher.done():
                    fetcher = self._fetchers[channel] = asyncio.get_running_loop().create_task(
                        self._fetch_into(channel, buffer), name=f"named receive {channel}"
                    )
                await asyncio.wait({fetcher})
                self._check_open()
                if not fetcher.cancelled() and fetcher.exception() is not None:
                    raise fetcher.exception()  # type: ignore[misc]  # a configuration error, not a blip
        finally:
            self._left(channel)

    def _left(self, channel: str) -> None:
        self._waiting[channel] -= 1
        if self._waiting[channel] > 0:
            return
        del self._waiting[channel]
        if not self._cancel_safe:  # the read runs out (receive_timeout); what it takes waits here
            return
        fetcher = self._fetchers.pop(channel, None)
        if fetcher is not None and not fetcher.done():
            fetcher.cancel()  # nobody waits: what the read had taken goes back to the broker
        if not self._buffers.get(channel):
            self._buffers.pop(channel, None)

    async def _fetch_into(self, channel: str, buffer: deque[_Entry]) -> None:
        try:
            await self._settle()  # a read cancelled earlier has put its message back (FIFO holds)
            data = await self._fetch(channel)
        except (asyncio.CancelledError, ConfigurationError):
            raise
        except Exception as exc:
            logger.warning("receive on %r failed (%s); retrying", channel, exc)
            await asyncio.sleep(0.5)
            return
        if data is not None:
            buffer.append(self._loads(data))

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._fetchers.values())

    def clear(self) -> None:
        """Forget what waits here (``flush()``)."""
        for buffer in self._buffers.values():
            buffer.clear()
