"""Job markers in the app's database (SQLite and PostgreSQL), seen by every worker process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from app.worker.dedup import Markers

from ..db.databases import KINDS, database


@pytest.mark.parametrize("kind", KINDS)
async def test_marks_are_shared_and_expire(kind: str, tmp_path: Path) -> None:
    async with database(kind, tmp_path) as url:
        # Markers is synchronous (the Celery worker): run it off the test's event loop
        first = await asyncio.to_thread(Markers, url, 60)  # migrates the empty database itself
        second = await asyncio.to_thread(Markers, url, 60)
        short = await asyncio.to_thread(Markers, url, 1)
        try:
            assert await asyncio.to_thread(first.unsent, ["a", "b", "c"]) == ["a", "b", "c"]
            await asyncio.to_thread(first.mark, "b")
            await asyncio.to_thread(first.mark, "b")  # marking twice is fine (a resumed retry)
            assert await asyncio.to_thread(second.unsent, ["a", "b", "c"]) == ["a", "c"]
            await asyncio.to_thread(short.mark, "c")
            deadline = time.monotonic() + 10
            while await asyncio.to_thread(second.unsent, ["c"]) != ["c"]:  # expired after its 1 s ttl
                assert time.monotonic() < deadline, "marker c never expired"
                await asyncio.sleep(0.2)
            assert await asyncio.to_thread(second.unsent, []) == []
        finally:
            for markers in (first, second, short):
                markers.close()


def test_a_database_url_the_worker_cannot_use_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database"):
        Markers("redis://127.0.0.1:6379/0", 60)
