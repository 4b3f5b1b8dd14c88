""""Already sent" markers, so a retried or redelivered task does not send a message twice.

A task checks the markers of what it is about to send, sends what is unmarked, and marks each
send as soon as the layer accepted it. A retry after a broker blip then resumes where the failed
attempt stopped. A send whose outcome is unknown (the broker took it, then the connection dropped
before the reply) is resent, so the layer delivers at least once; the chat consumer drops a repeat
of the same job message (app/chat/recent.py), so each client sees it exactly once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from typing import Protocol


class Markers(Protocol):
    def unsent(self, keys: Iterable[str]) -> list[str]: ...

    def mark(self, key: str) -> None: ...


class RedisMarkers:
    """``SET key 1 EX ttl`` per send; ``MGET`` to find what is left."""

    def __init__(self, url: str, ttl: int, prefix: str = "chat-jobs:sent:") -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.ttl, self.prefix = ttl, prefix

    def unsent(self, keys: Iterable[str]) -> list[str]:
        keys = list(keys)
        values = self.client.mget([self.prefix + key for key in keys]) if keys else []
        return [key for key, value in zip(keys, values, strict=True) if value is None]

    def mark(self, key: str) -> None:
        self.client.set(self.prefix + key, b"1", ex=self.ttl)


class SqlMarkers:
    """One row per send in ``chat_job_markers`` (primary key: the marker), pruned after ``ttl``."""

    def __init__(self, url: str, ttl: int) -> None:
        import sqlalchemy as sa

        self.sa = sa
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        self.ttl = ttl
        self.table = sa.Table("chat_job_markers", sa.MetaData(),
                              sa.Column("key", sa.Text, primary_key=True),
                              sa.Column("at", sa.Float, nullable=False, index=True))
        from sqlalchemy.exc import IntegrityError, ProgrammingError

        with contextlib.suppress(IntegrityError, ProgrammingError):  # another process created it meanwhile
            self.table.create(self.engine, checkfirst=True)
        with self.engine.begin() as conn:
            conn.execute(self.table.delete().where(self.table.c.at < time.time() - ttl))

    def unsent(self, keys: Iterable[str]) -> list[str]:
        keys = list(keys)
        if not keys:
            return []
        with self.engine.connect() as conn:
            found = set(conn.scalars(self.sa.select(self.table.c.key).where(self.table.c.key.in_(keys))))
        return [key for key in keys if key not in found]

    def mark(self, key: str) -> None:
        from sqlalchemy.dialects.postgresql import insert

        with self.engine.begin() as conn:
            conn.execute(insert(self.table).values(key=key, at=time.time()).on_conflict_do_nothing())


class AmqpMarkers:
    """RabbitMQ has no key-value store: a marker is an empty queue that expires after ``ttl``.

    ``queue_declare(passive=True)`` tells whether it exists; used only on the rabbitmq stack.
    """

    def __init__(self, url: str, ttl: int, prefix: str = "chat-jobs.sent.") -> None:
        from kombu import Connection

        self.connection = Connection(url, connect_timeout=5)
        self.ttl, self.prefix = ttl, prefix
        self._lock = threading.Lock()

    def _exists(self, name: str) -> bool:
        channel = self.connection.channel()
        try:
            channel.queue_declare(name, passive=True)
            return True
        except self.connection.channel_errors:
            return False
        finally:
            with contextlib.suppress(Exception):  # already closed by the NOT_FOUND error
                channel.close()

    def unsent(self, keys: Iterable[str]) -> list[str]:
        with self._lock:
            self.connection.ensure_connection(max_retries=1)
            return [key for key in keys if not self._exists(self.prefix + key)]

    def mark(self, key: str) -> None:
        with self._lock:
            channel = self.connection.channel()
            try:
                channel.queue_declare(self.prefix + key, durable=True, auto_delete=False,
                                      arguments={"x-expires": self.ttl * 1000})
            finally:
                channel.close()


class MemoryMarkers:
    """This process only: retries on the same process are deduplicated, redeliveries elsewhere not."""

    def __init__(self) -> None:
        self.sent: set[str] = set()

    def unsent(self, keys: Iterable[str]) -> list[str]:
        return [key for key in keys if key not in self.sent]

    def mark(self, key: str) -> None:
        self.sent.add(key)


def markers_for(url: str, ttl: int) -> Markers:
    """The marker store a URL names: redis(s)://, [db+|sqla+]postgresql://, amqp://, memory://."""
    for prefix in ("db+", "sqla+"):
        url = url.removeprefix(prefix)
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisMarkers(url, ttl)
    if scheme.startswith("postgresql"):
        from .settings import sqlalchemy_url

        return SqlMarkers(sqlalchemy_url(url), ttl)
    if scheme in ("amqp", "amqps", "pyamqp"):
        return AmqpMarkers(url, ttl)
    if scheme == "memory":
        return MemoryMarkers()
    raise ValueError(f"APP_JOBS_DEDUP_URL: no marker store for {scheme!r} URLs (use redis, postgresql or amqp)")
