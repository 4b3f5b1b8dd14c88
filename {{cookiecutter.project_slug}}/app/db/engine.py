"""The async engine on ``APP_DATABASE_URL``: SQLite (aiosqlite, WAL) embedded, PostgreSQL (asyncpg) shared.

SQLite allows one writer at a time; WAL lets readers go on meanwhile and ``busy_timeout`` makes a
second writer (another worker) wait for the lock instead of failing at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .. import telemetry

SQLITE_BUSY_TIMEOUT_MS = 10_000
DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def parse_url(url: str) -> URL:
    """``url`` with its async driver; a clear error for what the app cannot use."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ValueError("APP_DATABASE_URL is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend not in DRIVERS:
        raise ValueError(f"APP_DATABASE_URL: unsupported database {backend!r} (use sqlite or postgresql)")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError("APP_DATABASE_URL: SQLite needs a file (every worker and connection shares it)")
    return parsed.set(drivername=DRIVERS[backend])


def sqlite_path(url: URL) -> Path | None:
    return Path(url.database or "") if url.get_backend_name() == "sqlite" else None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, pool_size: int = 5) -> AsyncEngine:
    engine = _make_engine(url, pool_size)
    telemetry.instrument_engine(engine.sync_engine)
    return engine


def _make_engine(url: str, pool_size: int) -> AsyncEngine:
    parsed = parse_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, pool_size=pool_size, max_overflow=0)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
