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
    call. An exception raised by ``run`` itself fails every call of the batch.
    """

    def __init__(self, run: Callable[[list[C]], Awaitable[list[Any]]], max_batch: int = 512,
                 name: str = "auto-batch") -> None:
        self._run = run
        self.max_batch = max_batch
        self.name = name
        self._queue: list[tuple[C, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def call(self, call: C) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((call, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name=self.name)
        return await future

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                try:
                    results = await self._run([call for call, _ in batch])
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(_one_per_waiter(exc))
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._flusher = None

    def fail_pending(self, exc: ChannelLayerError) -> None:
        """At close: nobody waits forever for a batch that will not run."""
        if self._flusher is not None:
            self._flusher.cancel()
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
