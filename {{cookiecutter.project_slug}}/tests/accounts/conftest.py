from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.accounts.accounts import Accounts
from app.accounts.passwords import Passwords
from app.db.engine import make_engine
from app.db.migrate import migrate
from app.settings import Settings

from ..db.databases import KINDS, database

#: cheap argon2id parameters: the tests check behaviour, not cost
FAST = {"time_cost": 1, "memory_cost": 8192}


def make_settings(**overrides: object) -> Settings:
    return Settings.model_validate({"secret_key": "accounts-test-secret-" + "x" * 32, **overrides})


@pytest.fixture(params=KINDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated SQLite or PostgreSQL database of this test's own."""
    async with database(request.param, tmp_path) as url:
        await migrate(url)
        yield url


@pytest.fixture
async def accounts(database_url: str) -> AsyncIterator[Accounts]:
    engine = make_engine(database_url)
    yield Accounts(make_settings(admin_usernames="root-ops,Boss", login_attempts_per_username=3,
                                 login_attempts_per_address=5), engine, Passwords(**FAST))
    await engine.dispose()
