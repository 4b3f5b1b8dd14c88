""""Already sent" markers, so a retried or redelivered task does not send a message twice.

A task checks the markers of what it is about to send, sends what is unmarked, and marks each
send as soon as the layer accepted it. A retry after a broker blip then resumes where the failed
attempt stopped. A send whose outcome is unknown (the broker took it, then the connection dropped
before the reply) is resent, so the layer delivers at least once; the chat consumer drops a repeat
of the same job message (app/chat/recent.py), so each client sees it exactly once.

The markers are rows of ``job_markers`` in the app's own database (APP_DATABASE_URL, migrated
by Alembic like every table), whatever the broker: the Celery worker is synchronous, so it
reaches the same database through a sync driver (sqlite3, or psycopg2 from the celery extra).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from sqlalchemy import Engine, Table, create_engine, delete, event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..db.engine import SQLITE_BUSY_TIMEOUT_MS, parse_url, sqlite_path
from ..db.markers import JobMarker
from ..db.migrate import migrate

SYNC_DRIVERS = {"sqlite": "sqlite+pysqlite", "postgresql": "postgresql+psycopg2"}
table = cast(Table, JobMarker.__table__)


def sync_engine(url: str) -> Engine:
    """A sync engine on the database of the app's async ``url``."""
    parsed = parse_url(url)
    engine = create_engine(parsed.set(drivername=SYNC_DRIVERS[parsed.get_backend_name()]), pool_pre_ping=True)
    if sqlite_path(parsed) is not None:
        @event.listens_for(engine, "connect")
        def _busy_timeout(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    return engine


class Markers:
    """One ``job_markers`` row per send, expiring ``ttl`` seconds after it was marked."""

    def __init__(self, url: str, ttl: int) -> None:
        self.engine = sync_engine(url)
        # the web workers migrate at startup too; a worker that starts first must not wait for them
        # (in a thread of its own: this may be called where an event loop runs)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(lambda: asyncio.run(migrate(url))).result()
        self.ttl = ttl
        self._insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        with self.engine.begin() as connection:
            connection.execute(delete(table).where(table.c.expires < time.time()))

    def unsent(self, keys: Iterable[str]) -> list[str]:
        keys = list(keys)
        if not keys:
            return []
        with self.engine.connect() as connection:
            found = set(connection.scalars(select(table.c.key).where(
                table.c.key.in_(keys), table.c.expires >= time.time())))
        return [key for key in keys if key not in found]

    def mark(self, key: str) -> None:
        expires = time.time() + self.ttl
        with self.engine.begin() as connection:
            connection.execute(self._insert(table).values(key=key, expires=expires).on_conflict_do_update(
                index_elements=["key"], set_={"expires": expires}))

    def close(self) -> None:
        self.engine.dispose()
