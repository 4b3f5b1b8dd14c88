from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .databases import KINDS, database


@pytest.fixture(params=KINDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty SQLite or PostgreSQL database of this test's own."""
    async with database(request.param, tmp_path) as url:
        yield url
