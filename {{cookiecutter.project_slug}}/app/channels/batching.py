"""Automatic batching of concurrent broker calls (auto-pipelining).

The calls made while one batch is in flight go together in the next, so N concurrent sends
cost the broker and the client one request rather than N, and each caller still waits only
for its own result. An idle caller pays nothing extra: a lone call is a batch of one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from .exceptions import BrokerUnavailable, ChannelLayerError

C = TypeVar("C")


class AutoBatch(Generic[C]):
    """Runs queued calls through ``run(calls) -> results``, one batch at a time.

    ``run`` returns one result per call, in order; a result that is an exception fails only its
    call. An exception raised by ``run`` itself fails every call of the batch. A batch holds at
    most ``max_batch`` calls and, by ``size(call)``, about ``max_bytes`` (always at least one call).
    Up to ``concurrency`` batches run at once; with 1, batches run in order, so calls to one
    target keep their order even across batches.
    """

    def __init__(self, run: Callable[[list[C]], Awaitable[list[Any]]], max_batch: int = 512,
                 name: str = "auto-batch", *, size: Callable[[C], int] | None = None,
                 max_bytes: int = 1 << 20, concurrency: int = 1) -> None:
        self._run = run
        self.max_batch, self.max_bytes, self.concurrency = max_batch, max_bytes, concurrency
        self.name = name
        self._size = size
        self._queue: list[tuple[C, asyncio.Future[Any]]] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def call(self, call: C) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((call, future))
        if len(self._flushers) < self.concurrency:
            self._flushers.add(asyncio.create_task(self._flush(), name=self.name))
        return await future

    def _take(self) -> list[tuple[C, asyncio.Future[Any]]]:
        count = min(len(self._queue), self.max_batch)
        if self._size is not None:
            total = 0
            for index, (call, _) in enumerate(self._queue[:count]):
                total += self._size(call)
                if total > self.max_bytes:
                    count = max(index, 1)
                    break
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch

    async def _flush(self) -> None:
        try:
            while self._queue:
                await self._run_batch(self._take())
        finally:  # at once, not in a done-callback: a call() made meanwhile must start a flusher
            self._flushers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _run_batch(self, batch: list[tuple[C, asyncio.Future[Any]]]) -> None:
        try:
            results = await self._run([call for call, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(_one_per_waiter(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def fail_pending(self, exc: ChannelLayerError) -> None:
        """At close: nobody waits forever for a batch that will not run."""
        for flusher in list(self._flushers):
            flusher.cancel()
        queue, self._queue = self._queue, []
        for _, future in queue:
            if not future.done():
                future.set_exception(_one_per_waiter(exc))


def _one_per_waiter(exc: BaseException) -> BaseException:
    """A copy for each waiter: one instance raised in many tasks would chain their tracebacks."""
    if isinstance(exc, asyncio.CancelledError):
        return BrokerUnavailable("the batch was cancelled: the layer is closing")
    if isinstance(exc, ChannelLayerError):
        copy = type(exc)(*exc.args)
        copy.__cause__ = exc.__cause__ or exc
        return copy
    return exc
