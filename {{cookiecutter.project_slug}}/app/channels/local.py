"""The buffer of one process-local channel: a bounded FIFO with the waiting of ``asyncio.Queue``.

Every socket has a channel, so this is paid per connection: ``asyncio.Queue`` costs four deques
and an ``Event`` (about 3 KiB), this one deque and a list of its waiters.
``get()`` is cancel-safe like the queue's: an item is taken only by a ``get()`` that returns it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class LocalQueue(Generic[T]):
    __slots__ = ("_getters", "_items", "_putters", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._getters: list[asyncio.Future[None]] | None = None
        self._putters: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def put_nowait(self, item: T) -> None:
        """Append ``item`` (callers check ``full()`` first: a full queue raises ``asyncio.QueueFull``)."""
        if self.full():
            raise asyncio.QueueFull
        self._items.append(item)
        self._wake(self._getters)

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        self._wake(self._putters)
        return item

    async def get(self) -> T:
        while not self._items:
            if self._getters is None:
                self._getters = []
            await self._wait(self._getters)
        return self.get_nowait()

    async def put(self, item: T) -> None:
        while self.full():
            if self._putters is None:
                self._putters = []
            await self._wait(self._putters)
        self.put_nowait(item)

    async def _wait(self, waiters: list[asyncio.Future[None]]) -> None:
        """Sleep until woken; a waiter cancelled after its wake-up passes the wake-up on."""
        waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter in waiters:
                waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self._wake(waiters)
            raise

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]] | None) -> None:
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return
