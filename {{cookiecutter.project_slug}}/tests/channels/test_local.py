"""The local channel buffer: FIFO, bounded, and cancel-safe like ``asyncio.Queue``."""

from __future__ import annotations

import asyncio

import pytest

from app.channels.local import LocalQueue


async def test_items_leave_in_order_and_the_bound_holds() -> None:
    queue: LocalQueue[int] = LocalQueue(2)
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert queue.full() and queue.qsize() == 2
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(3)
    assert [await queue.get(), queue.get_nowait()] == [1, 2]
    assert queue.empty()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_a_waiting_get_takes_the_next_item() -> None:
    queue: LocalQueue[str] = LocalQueue(4)
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("hello")
    assert await asyncio.wait_for(waiting, 1) == "hello"


async def test_a_get_cancelled_after_its_wake_up_loses_nothing() -> None:
    """Woken and then cancelled before it ran: the item stays, and the next waiter is woken for it."""
    queue: LocalQueue[str] = LocalQueue(4)
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("only")  # wakes ``first``...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "only"
    assert first.cancelled() and queue.empty()


async def test_a_cancelled_get_leaves_no_waiter_behind() -> None:
    queue: LocalQueue[str] = LocalQueue(4)
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    queue.put_nowait("kept")
    assert queue.get_nowait() == "kept"


async def test_put_waits_for_room() -> None:
    queue: LocalQueue[int] = LocalQueue(1)
    queue.put_nowait(1)
    putting = asyncio.create_task(queue.put(2))
    await asyncio.sleep(0.01)
    assert not putting.done()
    assert queue.get_nowait() == 1
    await asyncio.wait_for(putting, 1)
    assert queue.get_nowait() == 2
