"""The in-memory layer: one process, no broker. The reference for the other backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ...base import BaseChannelLayer
from ...broker import BrokerEnv
from ...exceptions import ChannelFull


class InMemoryEnv(BrokerEnv):
    """``FASTAPI_WEBSOCKETS_INMEMORY_*``: the fields every backend reads."""


class InMemoryChannelLayer(BaseChannelLayer):
    """Every channel is a queue in this process; nothing crosses processes."""

    named_reads_cancel_safe = True  # a cancelled queue get takes nothing
    env_model = InMemoryEnv

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._channels: dict[str, asyncio.Queue[bytes]] = {}
        self._groups: dict[str, dict[str, float]] = {}  # named members: group -> {channel: expires_at}

    def _queue(self, channel: str) -> asyncio.Queue[bytes]:
        queue = self._channels.get(channel)
        if queue is None:
            queue = self._channels[channel] = asyncio.Queue(self.capacity)
        return queue

    async def _send(self, channel: str, data: bytes) -> None:
        queue = self._queue(channel)
        if queue.full():
            self._drop_expired(queue)
        try:
            queue.put_nowait(data)
        except asyncio.QueueFull:
            raise ChannelFull(f"channel {channel!r} is full ({self.capacity} messages)") from None

    def _drop_expired(self, queue: asyncio.Queue[bytes]) -> None:
        now = time.time()
        for data in [queue.get_nowait() for _ in range(queue.qsize())]:
            if self.serializer.loads(data)[0] >= now:
                queue.put_nowait(data)

    async def _receive(self, channel: str) -> bytes | None:
        return await self._queue(channel).get()

    async def _consume_inbox(self, deliver: Callable[[bytes], None]) -> None:
        await asyncio.Event().wait()  # nothing arrives from other processes

    async def _group_join(self, group: str) -> None:
        pass

    async def _group_leave(self, group: str) -> None:
        pass

    async def _group_add_channel(self, group: str, channel: str) -> None:
        self._groups.setdefault(group, {})[channel] = time.time() + self.group_expiry

    async def _group_discard_channel(self, group: str, channel: str) -> None:
        members = self._groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self._groups[group]

    async def _group_send(self, group: str, data: bytes) -> None:
        now = time.time()
        for channel, expires_at in list(self._groups.get(group, {}).items()):
            if expires_at >= now:
                try:
                    await self._send(channel, data)
                except ChannelFull:
                    self.dropped += 1

    async def _flush(self) -> None:
        self._channels.clear()
        self._groups.clear()

    async def _close(self) -> None:
        self._channels.clear()
        self._groups.clear()
