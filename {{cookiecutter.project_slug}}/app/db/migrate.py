"""Apply the Alembic migrations once, however many workers start at the same moment.

Every worker calls :func:`migrate` at startup (and ``python -m app migrate`` does it by hand).
The first to take the lock upgrades the schema; the others wait on the lock, then find the
schema at head and do nothing. The lock is PostgreSQL's session advisory lock, or on SQLite a
``flock`` on a file beside the database (SQLite's own locks do not span Alembic's several
transactions). A database already at head is found so with one query, without importing Alembic:
it would stay in every worker's memory (~10 MiB each) for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from .engine import make_engine, parse_url, sqlite_path

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
ADVISORY_LOCK_KEY = 0x63686174  # "chat": one key for this schema's migrations


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _upgrade(connection: Connection, revision: str) -> list[str]:
    """Upgrade on ``connection``; the revisions it applied (empty when already at ``revision``)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    before = MigrationContext.configure(connection).get_current_heads()
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
    after = MigrationContext.configure(connection).get_current_heads()
    return [] if set(before) == set(after) else list(after)


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    lock_path = path.with_name(path.name + ".migrate-lock")
    with lock_path.open("a") as handle:
        await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def _postgresql_upgrade(connection: AsyncConnection, revision: str) -> list[str]:
    await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    await connection.commit()
    try:
        applied = await connection.run_sync(_upgrade, revision)
        await connection.commit()
        return applied
    finally:
        await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
        await connection.commit()


_REVISION = re.compile(r"^(down_)?revision\s*(?::[^=]+)?=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)


def script_heads() -> set[str]:
    """The head revisions of the migration scripts, read as text (a revision no other one comes after)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        for down, name in _REVISION.findall(script.read_text()):
            (parents if down else revisions).add(name)
    return revisions - parents


async def _at_head(connection: AsyncConnection) -> bool:
    try:
        rows = (await connection.execute(text("SELECT version_num FROM alembic_version"))).all()
    except SQLAlchemyError:  # no table yet: a new database
        await connection.rollback()
        return False
    return {row[0] for row in rows} == script_heads()


async def migrate(url: str, revision: str = "head") -> list[str]:
    """Bring the database at ``url`` to ``revision``; the heads this call applied ([] if none)."""
    path = sqlite_path(parse_url(url))
    engine = make_engine(url, pool_size=1)
    try:
        if revision == "head":
            async with engine.connect() as connection:
                if await _at_head(connection):
                    return []
        if path is None:
            async with engine.connect() as connection:
                applied = await _postgresql_upgrade(connection, revision)
        else:
            async with _file_lock(path), engine.connect() as connection:
                applied = await connection.run_sync(_upgrade, revision)
                await connection.commit()
    finally:
        await engine.dispose()
    if applied:
        logger.info("database migrated to %s", ", ".join(applied))
    return applied
