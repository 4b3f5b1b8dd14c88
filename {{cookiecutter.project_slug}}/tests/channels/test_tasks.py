from __future__ import annotations

import asyncio
import gc

import pytest

from app.channels.tasks import cancel_and_wait


async def test_cancels_waits_and_consumes_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    sleeper, failer = asyncio.create_task(asyncio.sleep(60)), asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    await cancel_and_wait([sleeper, None, failer])
    assert sleeper.cancelled() and failer.done() and not failer.cancelled()
    del failer
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_a_task_that_ignores_cancellation_is_waited_for_at_most_the_timeout() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    started = asyncio.get_running_loop().time()
    await cancel_and_wait([task], timeout=0.2)
    assert not task.done() and asyncio.get_running_loop().time() - started < 5
    release.set()
    await task
