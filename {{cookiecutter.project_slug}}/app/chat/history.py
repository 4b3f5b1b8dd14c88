"""Recent messages per room, so a newcomer sees the last N.

``InProcessHistory`` keeps what this worker delivered (each worker sees the rooms it serves);
``RedisHistory`` keeps one capped list per room in Redis, shared by every worker and host.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from typing import Any, Protocol


class History(Protocol):
    async def on_sent(self, room: str, message: dict[str, Any]) -> None:
        """Called once where a message enters the system."""

    def on_delivered(self, room: str, message: dict[str, Any]) -> None:
        """Called for every local delivery (once per connection)."""

    async def recent(self, room: str) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class InProcessHistory:
    def __init__(self, size: int) -> None:
        self.size = size
        self._rooms: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self._seen: dict[str, set[str]] = {}

    async def on_sent(self, room: str, message: dict[str, Any]) -> None:
        pass

    def on_delivered(self, room: str, message: dict[str, Any]) -> None:
        if not self.size:
            return
        seen = self._seen.setdefault(room, set())
        if message["id"] in seen:
            return
        entries = self._rooms.setdefault(room, deque(maxlen=self.size))
        if len(entries) == self.size:
            seen.discard(entries[0]["id"])
        entries.append(message)
        seen.add(message["id"])
        self._rooms.move_to_end(room)
        while len(self._rooms) > 10_000:  # bound memory by rooms too
            old, _ = self._rooms.popitem(last=False)
            self._seen.pop(old, None)

    async def recent(self, room: str) -> list[dict[str, Any]]:
        return list(self._rooms.get(room, ()))

    async def close(self) -> None:
        pass


class RedisHistory:
    def __init__(self, url: str, size: int, prefix: str = "chat-history", ttl: int = 7 * 86400) -> None:
        import redis.asyncio as redis

        self.client = redis.Redis.from_url(url)
        self.size, self.prefix, self.ttl = size, prefix, ttl

    async def on_sent(self, room: str, message: dict[str, Any]) -> None:
        key = f"{self.prefix}:{room}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps(message)).ltrim(key, -self.size, -1).expire(key, self.ttl)
            await pipe.execute()

    def on_delivered(self, room: str, message: dict[str, Any]) -> None:
        pass

    async def recent(self, room: str) -> list[dict[str, Any]]:
        return [json.loads(item) for item in await self.client.lrange(f"{self.prefix}:{room}", 0, -1)]

    async def close(self) -> None:
        await self.client.aclose()


def make_history(backend: str, size: int, environ: dict[str, str]) -> History:
    """The broker's store where the layer's broker has one, else this worker's memory."""
    if backend == "redis" and size:
        return RedisHistory(environ.get("FASTAPI_WEBSOCKETS_REDIS_URL", "redis://127.0.0.1:6379/0"), size)
    return InProcessHistory(size)
