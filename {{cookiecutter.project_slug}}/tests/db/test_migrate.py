"""Migrations: applied once by workers starting together, and the result equals the models."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from app.db.engine import make_engine
from app.db.migrate import alembic_config, migrate, script_heads
from app.db.models import metadata

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import asyncio, json, sys
from app.db.migrate import migrate
print(json.dumps(asyncio.run(migrate(sys.argv[1]))))
"""


def head() -> str:
    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


async def test_migrated_schema_equals_the_models(database_url: str) -> None:
    assert await migrate(database_url) == [head()]
    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata))
    finally:
        await engine.dispose()
    assert diff == []


async def test_a_second_run_applies_nothing(database_url: str) -> None:
    assert await migrate(database_url) == [head()]
    assert await migrate(database_url) == []


def test_the_heads_read_from_the_scripts_are_alembics() -> None:
    assert script_heads() == set(ScriptDirectory.from_config(alembic_config()).get_heads())


async def test_a_worker_finds_a_migrated_database_without_importing_alembic(database_url: str) -> None:
    """Alembic stays out of a worker's memory when there is nothing to do (a fresh interpreter, like a worker)."""
    assert await migrate(database_url) == [head()]
    probe = ("import asyncio, json, sys\nfrom app.db.migrate import migrate\n"
             "applied = asyncio.run(migrate(sys.argv[1]))\nprint(json.dumps([applied, 'alembic' in sys.modules]))")
    done = await asyncio.create_subprocess_exec(sys.executable, "-c", probe, database_url, cwd=ROOT,
                                                env={**os.environ, "PYTHONPATH": str(ROOT)},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(done.communicate(), 60)
    assert done.returncode == 0, err.decode()[-2000:]
    assert json.loads(out) == [[], False]


@pytest.mark.slow
async def test_workers_starting_at_once_migrate_once(database_url: str) -> None:
    """Six real processes start at the same moment: exactly one applies the migrations, none fails."""
    processes = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", WORKER, database_url, cwd=ROOT,
                                             env={**os.environ, "PYTHONPATH": str(ROOT)},
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for _ in range(6)
    ]
    results = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in processes)), 120)
    assert [p.returncode for p in processes] == [0] * 6, [err.decode()[-2000:] for _, err in results]
    applied = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in results]
    assert sorted(applied, key=len) == [[]] * 5 + [[head()]]
    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    finally:
        await engine.dispose()
    assert versions == [head()]


def test_bad_urls_get_clear_errors() -> None:
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        make_engine("mysql://root@localhost/chat")
    with pytest.raises(ValueError, match="SQLite needs a file"):
        make_engine("sqlite+aiosqlite:///:memory:")
    with pytest.raises(ValueError, match="not a database URL"):
        make_engine("not a url")
