"""The engine: SQLite runs in WAL mode with a busy timeout, so several workers can share the file."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from app.db.engine import SQLITE_BUSY_TIMEOUT_MS, make_engine


async def test_sqlite_connections_get_wal_and_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'chat.db'}")  # plain sqlite: the async driver is added
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await connection.execute(text("PRAGMA busy_timeout"))).scalar() == SQLITE_BUSY_TIMEOUT_MS
            assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await engine.dispose()
    assert (tmp_path / "nested" / "chat.db").exists()


async def test_postgresql_urls_get_asyncpg() -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:5432/test")
    try:
        assert engine.dialect.driver == "asyncpg"
    finally:
        await engine.dispose()
