"""Recent messages per room, so a newcomer sees the last N.

The stack's broker keeps them where it has a store, shared by every worker and host:
``RedisHistory`` (a capped list per room), ``PostgreSQLHistory`` (a table, trimmed per room),
``NATSHistory`` (a JetStream stream keeping N messages per room subject). RabbitMQ has no such
store, so there ``InProcessHistory`` keeps what each worker delivered for the rooms it serves.
"""

from __future__ import annotations

import asyncio
import json
import re
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

        # a bounded pool that waits for a free connection instead of failing under load
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=16, timeout=10)
        self.client = redis.Redis(connection_pool=pool)
        self.size, self.prefix, self.ttl = size, prefix, ttl

    async def on_sent(self, room: str, message: dict[str, Any]) -> None:
        key = f"{self.prefix}:{room}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps(message))
            pipe.ltrim(key, -self.size, -1)
            pipe.expire(key, self.ttl)
            await pipe.execute()

    def on_delivered(self, room: str, message: dict[str, Any]) -> None:
        pass

    async def recent(self, room: str) -> list[dict[str, Any]]:
        return [json.loads(item) for item in await self.client.lrange(f"{self.prefix}:{room}", 0, -1)]

    async def close(self) -> None:
        await self.client.aclose()


class PostgreSQLHistory:
    """One table for every room; each insert trims its room to the newest ``size`` rows."""

    def __init__(self, dsn: str, size: int, table: str = "chat_history") -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", table):
            raise ValueError(f"invalid history table name {table!r}")
        self.dsn, self.size, self.table = dsn, size, table
        self._pool: Any = None
        self._lock = asyncio.Lock()

    async def _connection_pool(self) -> Any:
        async with self._lock:
            if self._pool is None:
                import asyncpg

                pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
                await pool.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.table} (seq bigserial PRIMARY KEY, room text NOT NULL,"
                    f" body jsonb NOT NULL); CREATE INDEX IF NOT EXISTS {self.table}_room ON {self.table} (room, seq)"
                )
                self._pool = pool
        return self._pool

    async def on_sent(self, room: str, message: dict[str, Any]) -> None:
        pool = await self._connection_pool()
        await pool.execute(  # one round trip: add, then trim the room to its newest rows
            f"WITH added AS (INSERT INTO {self.table} (room, body) VALUES ($1, $2::jsonb))"
            f" DELETE FROM {self.table} WHERE room = $1 AND seq < (SELECT min(seq) FROM"
            f" (SELECT seq FROM {self.table} WHERE room = $1 ORDER BY seq DESC LIMIT $3) newest)",
            room, json.dumps(message), self.size,
        )

    def on_delivered(self, room: str, message: dict[str, Any]) -> None:
        pass

    async def recent(self, room: str) -> list[dict[str, Any]]:
        pool = await self._connection_pool()
        rows = await pool.fetch(
            f"SELECT body FROM (SELECT seq, body FROM {self.table} WHERE room = $1 ORDER BY seq DESC LIMIT $2) t"
            " ORDER BY seq", room, self.size,
        )
        return [json.loads(row["body"]) for row in rows]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


class NATSHistory:
    """A JetStream stream with one subject per room, keeping the newest ``size`` per subject."""

    def __init__(self, servers: list[str], size: int, prefix: str = "chat-history") -> None:
        self.servers, self.size = servers, size
        self.subject = re.sub(r"[^A-Za-z0-9_-]", "_", prefix)
        self.stream = f"{self.subject.upper()}_HISTORY"
        self._js: Any = None
        self._nc: Any = None
        self._lock = asyncio.Lock()

    async def _jetstream(self) -> Any:
        async with self._lock:
            if self._js is None:
                import nats
                from nats.js.api import StreamConfig

                self._nc = await nats.connect(servers=self.servers, max_reconnect_attempts=-1)
                js = self._nc.jetstream()
                config = StreamConfig(name=self.stream, subjects=[f"{self.subject}.>"],
                                      max_msgs_per_subject=self.size, max_age=7 * 86400)
                try:
                    await js.add_stream(config)
                except Exception:
                    await js.update_stream(config)
                self._js = js
        return self._js

    async def on_sent(self, room: str, message: dict[str, Any]) -> None:
        js = await self._jetstream()
        await js.publish(f"{self.subject}.{room}", json.dumps(message).encode(), timeout=5)

    def on_delivered(self, room: str, message: dict[str, Any]) -> None:
        pass

    async def recent(self, room: str) -> list[dict[str, Any]]:
        js = await self._jetstream()
        subscription = await js.subscribe(f"{self.subject}.{room}", ordered_consumer=True)
        messages: list[dict[str, Any]] = []
        try:
            while True:
                try:
                    message = await subscription.next_msg(timeout=0.5)
                except TimeoutError:
                    break  # an empty room
                messages.append(json.loads(message.data))
                if message.metadata.num_pending == 0:
                    break
        finally:
            await subscription.unsubscribe()
        return messages[-self.size:]

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()


def make_history(backend: str, size: int, environ: dict[str, str]) -> History:
    """The broker's store where the layer's broker has one, else this worker's memory."""
    if not size:
        return InProcessHistory(size)
    prefix = environ.get(f"FASTAPI_WEBSOCKETS_{backend.upper()}_PREFIX", "chat")
    if backend == "redis":
        url = environ.get("FASTAPI_WEBSOCKETS_REDIS_URL", "redis://127.0.0.1:6379/0")
        return RedisHistory(url, size, prefix=f"{prefix}:history")
    if backend == "postgresql":
        dsn = environ.get("FASTAPI_WEBSOCKETS_POSTGRESQL_DSN", "postgresql://127.0.0.1/postgres")
        return PostgreSQLHistory(dsn, size, table=re.sub(r"[^a-z0-9_]", "_", f"{prefix.lower()}_history"))
    if backend == "nats":
        servers = environ.get("FASTAPI_WEBSOCKETS_NATS_SERVERS", "nats://127.0.0.1:4222").split(",")
        return NATSHistory(servers, size, prefix=f"{prefix}-history")
    return InProcessHistory(size)
