"""AutoBatch on its own: batching, per-call failures, whole-batch failures, close."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.channels.batching import AutoBatch
from app.channels.exceptions import BrokerUnavailable, ChannelFull


class Recorder:
    def __init__(self, delay: float = 0.01) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay

    async def run(self, calls: list[int]) -> list[Any]:
        self.batches.append(calls)
        await asyncio.sleep(self.delay)
        return [ChannelFull(f"{n} is full") if n < 0 else n * 10 for n in calls]


async def test_calls_made_during_a_batch_go_together_in_the_next() -> None:
    recorder = Recorder()
    batch = AutoBatch(recorder.run, max_batch=4)
    first = asyncio.create_task(batch.call(0))
    await asyncio.sleep(0)  # the first batch is in flight with one call
    rest = await asyncio.gather(*(batch.call(n) for n in range(1, 10)))
    assert [await first, *rest] == [n * 10 for n in range(10)]
    assert recorder.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


async def test_an_error_result_fails_only_its_call() -> None:
    batch = AutoBatch(Recorder().run)
    results = await asyncio.gather(batch.call(1), batch.call(-2), batch.call(3), return_exceptions=True)
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ChannelFull) and "-2 is full" in str(results[1])


async def test_a_failing_batch_fails_each_waiter_with_its_own_exception() -> None:
    up = False

    async def flaky(calls: list[int]) -> list[Any]:
        if not up:
            raise BrokerUnavailable("broker at x is unavailable")
        return [n * 10 for n in calls]

    batch = AutoBatch(flaky)
    results = await asyncio.gather(*(batch.call(n) for n in range(3)), return_exceptions=True)
    assert all(isinstance(r, BrokerUnavailable) and "unavailable" in str(r) for r in results)
    assert len({id(r) for r in results}) == 3
    up = True
    assert await batch.call(2) == 20  # the broker is back: the next call runs


async def test_fail_pending_releases_every_waiter() -> None:
    batch = AutoBatch(Recorder(delay=10).run)
    waiters = [asyncio.create_task(batch.call(n)) for n in range(3)]
    await asyncio.sleep(0.01)
    batch.fail_pending(BrokerUnavailable("closed"))
    for waiter in waiters:
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(waiter, 1)


async def test_a_batch_stops_at_max_bytes_but_takes_at_least_one_call() -> None:
    recorder = Recorder()
    batch = AutoBatch(recorder.run, size=lambda n: n, max_bytes=10)
    first = asyncio.create_task(batch.call(0))
    await asyncio.sleep(0)
    await asyncio.gather(*(batch.call(n) for n in (6, 6, 3, 20)), first)
    assert recorder.batches == [[0], [6], [6, 3], [20]]


async def test_up_to_concurrency_batches_run_at_once() -> None:
    running = peak = 0

    async def run(calls: list[int]) -> list[Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return calls

    batch = AutoBatch(run, max_batch=2, concurrency=3)
    assert await asyncio.gather(*(batch.call(n) for n in range(12))) == list(range(12))
    assert peak == 3
    assert await batch.call(99) == 99  # the flushers are gone; a later call starts one again


async def assert_concurrent_sends_share_batches(sender: Any, receiver: Any, batch: AutoBatch[Any], named: str) -> None:
    """For a backend's tests: 90 sends to a process-local channel and 30 to ``named`` (capacity 20)
    at once go in a few batches; the 10 that do not fit fail alone, and order is kept."""
    channel = await receiver.new_channel()
    batches: list[int] = []
    run = batch._run

    async def counting(calls: list[Any]) -> list[Any]:
        batches.append(len(calls))
        return await run(calls)

    batch._run = counting  # type: ignore[method-assign]
    results = await asyncio.gather(*(sender.send(channel, {"type": "m", "n": n}) for n in range(90)),
                                   *(sender.send(named, {"type": "m", "n": n}) for n in range(30)),
                                   return_exceptions=True)
    assert results[:110] == [None] * 110
    assert all(isinstance(result, ChannelFull) for result in results[110:])
    assert sum(batches) == 120 and len(batches) < 10, batches
    assert [(await asyncio.wait_for(receiver.receive(channel), 10))["n"] for _ in range(90)] == list(range(90))
    assert [(await asyncio.wait_for(receiver.receive(named), 10))["n"] for _ in range(20)] == list(range(20))
