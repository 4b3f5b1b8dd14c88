"""Throwaway databases for a test: a SQLite file, or a ``chat_<random>`` database on the shared PostgreSQL server."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from ..brokers import URLS, require_broker

KINDS = ("sqlite", "postgresql")


def _server_url(database: str) -> str:
    parts = urlsplit(URLS["postgresql"])
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


@contextlib.asynccontextmanager
async def postgresql_database() -> AsyncIterator[str]:
    """A fresh database on the test server, dropped afterwards: its ``postgresql+asyncpg://`` URL."""
    require_broker("postgresql")
    name = f"chat_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(_server_url("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _server_url(name).replace("postgresql://", "postgresql+asyncpg://", 1)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of ``kind`` (``sqlite`` or ``postgresql``): its URL."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    else:
        async with postgresql_database() as url:
            yield url
