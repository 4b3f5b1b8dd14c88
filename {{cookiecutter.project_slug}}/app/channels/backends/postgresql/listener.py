"""The PostgreSQL layer's one LISTEN connection: NOTIFY only wakes readers, the tables hold the data.

While the connection is down, readers poll every ``poll_interval`` and it reconnects with
``Backoff``; on every (re)connection each reader is woken, so nothing sent meanwhile waits for
the next poll. Names nobody read for ``IDLE_UNLISTEN`` seconds are UNLISTENed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ...broker import Backoff
from ...tasks import cancel_and_wait

if TYPE_CHECKING:
    from asyncpg import Connection

logger = logging.getLogger("app.channels")

HEALTH_INTERVAL = 10.0  # the LISTEN connection is pinged this often
IDLE_UNLISTEN = 300.0  # named channels nobody read for this long are UNLISTENed
MAX_RECONNECT_DELAY = 2.0
CONNECT_TIMEOUT = 5.0


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``. Unlike 3.11's ``wait_for``, never swallows a cancel."""
    if event.is_set():
        return
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()


class Listener:
    """The events NOTIFYs set, by notify channel name, fed by one connection ``connect()`` opens."""

    def __init__(self, connect: Callable[[], Awaitable[Connection]], poll_interval: float) -> None:
        self._connect = connect
        self.poll_interval = poll_interval
        self._lock = asyncio.Lock()
        self._conn: Connection | None = None  # the LISTEN connection while it is healthy
        self._wakers: dict[str, asyncio.Event] = {}
        self._last_used: dict[str, float] = {}  # named notify channel -> monotonic time of last read
        self._task: asyncio.Task[None] | None = None

    def touch(self, name: str) -> None:
        """``name`` was just read: keep LISTENing to it."""
        self._last_used[name] = time.monotonic()

    async def watch(self, name: str) -> asyncio.Event:
        """The event a NOTIFY on ``name`` sets; LISTENs on it before returning when connected."""
        waker = self._wakers.get(name)
        if waker is not None:
            return waker
        waker = self._wakers[name] = asyncio.Event()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="PostgreSQL listen")
        async with self._lock:
            conn = self._conn
            if conn is not None:
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        await conn.add_listener(name, self._on_notify)
                except Exception as exc:  # the loop reconnects and LISTENs to every name again
                    logger.warning("LISTEN failed (%s); reconnecting", exc)
                    self._conn = None
                    conn.terminate()
        return waker

    async def wait(self, waker: asyncio.Event, longest: float) -> None:
        """Sleep until ``waker`` fires, at most ``longest``, or ``poll_interval`` while not listening."""
        timeout = longest if self._conn is not None else min(longest, self.poll_interval)
        await wait_event(waker, timeout)

    async def close(self) -> None:
        """Stop listening; returns once the connection is closed."""
        await cancel_and_wait([self._task], timeout=CONNECT_TIMEOUT)

    def _on_notify(self, _conn: object, _pid: int, channel: str, _payload: object) -> None:
        waker = self._wakers.get(channel)
        if waker is not None:
            waker.set()

    def _wake_all(self) -> None:
        for waker in self._wakers.values():
            waker.set()

    async def _loop(self) -> None:
        """Keep one LISTEN connection; while it is down, readers poll every ``poll_interval``."""
        backoff = Backoff(self.poll_interval, max(self.poll_interval, MAX_RECONNECT_DELAY))
        failing = False
        while True:
            conn: Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await self._connect()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                async with self._lock:
                    for name in list(self._wakers):
                        async with asyncio.timeout(CONNECT_TIMEOUT):
                            await conn.add_listener(name, self._on_notify)
                    self._conn = conn
                if failing:
                    logger.info("PostgreSQL LISTEN connection restored")
                failing = False
                backoff.reset()
                self._wake_all()  # anything sent while nobody listened
                while not lost.is_set():
                    await wait_event(lost, HEALTH_INTERVAL)
                    if not lost.is_set():
                        async with self._lock:
                            await conn.execute("SELECT 1", timeout=CONNECT_TIMEOUT)
                            await self._unlisten_idle(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log = logger.debug if failing else logger.warning
                log("PostgreSQL LISTEN connection failed (%s); polling every %.2fs", exc, self.poll_interval)
                failing = True
            finally:
                self._conn = None
                if conn is not None:
                    conn.terminate()
                self._wake_all()  # readers switch to polling
            await asyncio.sleep(backoff.next())

    async def _unlisten_idle(self, conn: Connection) -> None:
        cutoff = time.monotonic() - IDLE_UNLISTEN
        for name, used in list(self._last_used.items()):
            if used < cutoff:
                del self._last_used[name]
                self._wakers.pop(name, None)
                await conn.remove_listener(name, self._on_notify)
