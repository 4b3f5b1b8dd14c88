"""The PostgreSQL layer's tables: schema names that cannot carry SQL, versioned DDL, and the
migration that many workers may start at once.

Three tables in ``schema``, every row namespaced by the layer's ``prefix``:

* ``message``: one row per message to a named channel.
* ``inbox``: one row per entry for a process (a group copy, or a message to one of its ``!`` channels).
* ``membership``: a process's lease on a group, or a channel added to a group by name.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ...exceptions import ConfigurationError

logger = logging.getLogger("app.channels")

#: Schema names we accept: a plain SQL identifier (and never a ``pg_`` system name).
SCHEMA_NAME = re.compile(r"(?!pg_)[A-Za-z_][A-Za-z0-9_]{0,62}")
SCHEMA_LOCK_CLASS = 0x66777331  # first key of pg_advisory_xact_lock(class, hashtext(schema))

#: (version, DDL). Append new versions; never edit a released one. ``{s}`` is the quoted schema.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE {s}.message (
            id bigserial PRIMARY KEY,
            prefix text NOT NULL,
            channel text NOT NULL,
            data bytea NOT NULL,
            expires_at timestamptz NOT NULL
        );
        CREATE INDEX message_channel_idx ON {s}.message (prefix, channel, id);
        CREATE INDEX message_expiry_idx ON {s}.message (expires_at);
        ALTER TABLE {s}.message ALTER COLUMN data SET STORAGE EXTERNAL;
        CREATE TABLE {s}.inbox (
            id bigserial PRIMARY KEY,
            prefix text NOT NULL,
            process text NOT NULL,
            to_group boolean NOT NULL,
            name text NOT NULL,
            data bytea NOT NULL,
            expires_at timestamptz NOT NULL
        );
        CREATE INDEX inbox_process_idx ON {s}.inbox (prefix, process, id);
        CREATE INDEX inbox_expiry_idx ON {s}.inbox (expires_at);
        ALTER TABLE {s}.inbox ALTER COLUMN data SET STORAGE EXTERNAL;
        CREATE TABLE {s}.membership (
            prefix text NOT NULL,
            group_name text NOT NULL,
            kind smallint NOT NULL,
            member text NOT NULL,
            process text,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (prefix, group_name, kind, member)
        );
        CREATE INDEX membership_expiry_idx ON {s}.membership (expires_at);
        """,
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def validate_schema_name(name: object) -> str:
    """Accept only a plain identifier, so a schema name can never carry SQL."""
    if not isinstance(name, str) or not SCHEMA_NAME.fullmatch(name):
        raise ConfigurationError(
            f"invalid PostgreSQL schema name {name!r}: use 1-63 ASCII letters, digits and '_',"
            " not starting with a digit or 'pg_'"
        )
    return name


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_schema(conn: Any, schema: str) -> int:
    """Create or upgrade the tables of ``schema`` (validated) on ``conn``; returns the version.

    Idempotent, and safe when many workers start at once: the migrations run under a
    transaction-scoped advisory lock, recorded in ``schema_version``.
    """
    s = quote_ident(schema)
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{s}.schema_version"):
        found: int = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {s}.schema_version")
        if found >= SCHEMA_VERSION:  # the usual start: no lock, no DDL
            return found
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", SCHEMA_LOCK_CLASS, schema)
        if not await conn.fetchval("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", schema):
            await conn.execute(f"CREATE SCHEMA {s}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.schema_version"
            " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current: int = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {s}.schema_version")
        for version, ddl in MIGRATIONS:
            if version > current:
                await conn.execute(ddl.replace("{s}", s))
                await conn.execute(f"INSERT INTO {s}.schema_version (version) VALUES ($1)", version)
                current = version
        if current > SCHEMA_VERSION:
            logger.warning("schema %s is at version %d, newer than this code (%d)", s, current, SCHEMA_VERSION)
        return current
