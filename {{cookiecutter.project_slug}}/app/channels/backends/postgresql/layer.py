"""The PostgreSQL layer (asyncpg): tables hold the messages, LISTEN/NOTIFY only wakes the readers.

Named channels are rows in ``message``; a process's inbox (group copies, messages to its ``!``
channels) is rows in ``inbox``, drained in batches and fanned out locally; group memberships are
leases in ``membership`` (``schema.py``, statements in ``statements.py``). A missed notification
only delays delivery until the next poll (``listener.py``).

Connections stay bounded per process: one LISTEN connection (opened on first receive) plus a pool of
``pool_size``, every one named ``app.channels <pool|listen> <process_id>`` (``application_name``
in ``pg_stat_activity``). ``close()`` returns once all of them are closed. When the LISTEN
connection drops, readers poll every ``poll_interval`` while it reconnects; when PostgreSQL itself
is down, operations raise ``BrokerUnavailable``.

Extra CONFIG keys: ``pool_size`` (4).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import logging
import random
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ...base import BaseChannelLayer
from ...batching import AutoBatch
from ...broker import BrokerEnv, broker_errors, redact_url, require_positive
from ...exceptions import BrokerUnavailable, ChannelFull, ConfigurationError, LayerClosed
from ...names import is_process_local, process_of
from ...tasks import cancel_and_wait
from .. import import_client
from . import statements as sql
from .listener import Listener
from .schema import ensure_schema, quote_ident, validate_schema_name

if TYPE_CHECKING:
    from asyncpg import Connection, Pool
    from asyncpg.pool import PoolConnectionProxy

logger = logging.getLogger("app.channels")

#: The layer's database when no ``dsn`` is given (Celery's default follows it).
DEFAULT_DSN = "postgresql://localhost/postgres"
SAFETY_POLL = 5.0  # the inbox is re-read this often even when no notification came
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 30.0
INBOX_BATCH = 64
SEND_BATCH = 256  # concurrent sends that share one statement at most
PRUNE_BATCH = 500
PRUNE_MAX_BATCHES = 20

_SendCall = tuple[bool, str, str, bytes]  # to an inbox?, its process or the named channel, channel, data


async def _keep_session(_conn: PoolConnectionProxy) -> None:
    """Pool reset hook. The default runs ``RESET ALL; UNLISTEN *; ...``: one more round trip per
    query. Our statements leave no session state (transactions are managed, settings are local)."""


with warnings.catch_warnings():
    # ``schema`` is the seed's variable name; it shadows the deprecated BaseModel.schema().
    warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

    class PostgreSQLEnv(BrokerEnv):
        """``FASTAPI_WEBSOCKETS_POSTGRESQL_*``"""

        dsn: str | None = None
        schema: str | None = None  # type: ignore[assignment]
        poll_interval: float | None = None
        prune_interval: float | None = None
        ensure_schema: bool | None = None
        pool_size: int | None = None


class PostgreSQLChannelLayer(BaseChannelLayer):
    """Channels over PostgreSQL tables, woken by LISTEN/NOTIFY."""

    named_reads_cancel_safe = True  # a cancelled pop puts what it took back at the head (_settle waits)
    env_model = PostgreSQLEnv
    inbox_backpressure = True

    def __init__(
        self,
        *,
        dsn: str = DEFAULT_DSN,
        schema: str = "fastapi_websockets",
        poll_interval: float = 0.1,
        prune_interval: float = 60.0,
        ensure_schema: bool = True,
        pool_size: int = 4,
        **config: Any,
    ) -> None:
        super().__init__(**config)
        if not isinstance(dsn, str) or not dsn:
            raise ConfigurationError("dsn must be a non-empty PostgreSQL connection string")
        for key, value in (("poll_interval", poll_interval), ("prune_interval", prune_interval),
                           ("pool_size", pool_size)):
            if not isinstance(value, int | float):
                raise ConfigurationError(f"{key} must be a number, got {value!r}")
        require_positive(poll_interval=poll_interval, prune_interval=prune_interval, pool_size=pool_size)
        self.schema = validate_schema_name(schema)
        self.dsn = dsn
        self.poll_interval = float(poll_interval)
        self.prune_interval = float(prune_interval)
        self.pool_size = int(pool_size)
        self._auto_schema = bool(ensure_schema)
        self._asyncpg = import_client("asyncpg", "postgresql")
        exceptions = self._asyncpg.exceptions
        self._errors: tuple[type[BaseException], ...] = (
            OSError,  # refused, reset, TimeoutError
            exceptions.PostgresConnectionError,
            exceptions.InterfaceError,
            exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
            exceptions.InsufficientResourcesError,  # too many connections
            exceptions.InternalClientError,  # a connection left mid-protocol by a dying server
        )
        # a libpq keyword DSN ("host=... password=...") is no URL to redact: name none of it
        self._where = f"PostgreSQL at {redact_url(dsn)}" if "://" in dsn else "PostgreSQL (keyword DSN)"
        self._quoted = quote_ident(self.schema)
        self._notify_key = f"{self.schema}/{self.prefix}/"
        self._inbox_name = self._notify_name("p", self.process_id)
        self._pool: Pool | None = None
        self._schema_ready = False
        self._start_lock = asyncio.Lock()
        self._listener = Listener(self._connect_listener, self.poll_interval)
        self._prune_task: asyncio.Task[None] | None = None
        self._leftovers: set[asyncio.Future[Any]] = set()  # pops (and give-backs) whose receive left
        # a few statements at once on the pool (big bodies fill a batch by bytes); the rest of the
        # pool stays free for reads and memberships
        self._sends: AutoBatch[_SendCall] = AutoBatch(
            self._send_batch, SEND_BATCH, "PostgreSQL sends", size=lambda call: len(call[3]),
            concurrency=max(1, self.pool_size // 2),
        )

    @property
    def lease(self) -> float:
        """How long a process's group membership lives without a refresh."""
        return 3 * self.refresh_interval

    def _sql(self, template: str) -> str:
        return sql.render(template, self._quoted)

    def _notify_name(self, kind: str, name: str) -> str:
        """The NOTIFY channel of a process (``p``) or named channel (``c``): short, and per schema/prefix."""
        digest = hashlib.md5(f"{self._notify_key}{kind}/{name}".encode(), usedforsecurity=False).hexdigest()
        return f"fws_{digest}"

    # ------------------------------------------------------------------ connections

    def application_name(self, role: str) -> str:
        """What ``pg_stat_activity`` shows for this layer's ``pool`` and ``listen`` connections."""
        return f"app.channels {role} {self.process_id}"

    async def _connect_listener(self) -> Connection:
        conn: Connection = await self._asyncpg.connect(
            self.dsn, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT,
            server_settings={"application_name": self.application_name("listen")},
        )
        return conn

    async def _get_pool(self) -> Pool:
        if self._pool is not None:
            return self._pool
        async with self._start_lock:
            if self._pool is None:
                self._check_open()
                options: dict[str, Any] = {}
                if "reset" in inspect.signature(self._asyncpg.create_pool).parameters:  # asyncpg >= 0.30
                    options["reset"] = _keep_session
                pool = await self._asyncpg.create_pool(
                    self.dsn, min_size=0, max_size=self.pool_size, timeout=CONNECT_TIMEOUT,
                    command_timeout=COMMAND_TIMEOUT,
                    server_settings={"application_name": self.application_name("pool")}, **options,
                )
                if self._closed:  # close() ran while the pool was being made: it found nothing to close
                    await pool.close()
                    raise LayerClosed(f"{type(self).__name__} is closed; create a new layer")
                self._pool = pool
                loop = asyncio.get_running_loop()
                self._prune_task = loop.create_task(self._prune_loop(), name="PostgreSQL prune")
            return self._pool

    @contextlib.contextmanager
    def _tables_explained(self) -> Iterator[None]:
        """Missing tables are a configuration problem: say how to create them."""
        exceptions = self._asyncpg.exceptions
        try:
            yield
        except (exceptions.UndefinedTableError, exceptions.InvalidSchemaNameError) as exc:
            raise ConfigurationError(
                f"the channel layer tables are missing in schema {self.schema!r} ({exc}):"
                " set ensure_schema=True or call ensure_schema() once"
            ) from exc

    @contextlib.asynccontextmanager
    async def _connection(self, *, schema: bool = True) -> AsyncIterator[PoolConnectionProxy]:
        """A pooled connection; connection failures become ``BrokerUnavailable``."""
        with broker_errors(self._where, *self._errors), self._tables_explained():
            pool = await self._get_pool()
            if schema and not self._schema_ready:
                async with self._start_lock:
                    if not self._schema_ready:
                        if self._auto_schema:
                            await self.ensure_schema()
                        self._schema_ready = True
            async with pool.acquire() as conn:
                try:
                    yield conn
                except self._errors:
                    conn.terminate()  # never hand a connection in an unknown state out again
                    raise

    async def _fetchval(self, template: str, *args: Any) -> Any:
        async with self._connection() as conn:
            return await conn.fetchval(self._sql(template), *args)

    async def _fetchrow(self, template: str, *args: Any) -> Any:
        async with self._connection() as conn:
            return await conn.fetchrow(self._sql(template), *args)

    async def ensure_schema(self) -> int:
        """Create or upgrade the tables; returns the schema version (see ``schema.ensure_schema``)."""
        async with self._connection(schema=False) as conn:
            version: int = await ensure_schema(conn, self.schema)
            return version

    # ------------------------------------------------------------------ broker primitives

    async def _send(self, channel: str, data: bytes) -> None:
        if is_process_local(channel):
            if not await self._sends.call((True, process_of(channel), channel, data)):
                raise ChannelFull(f"the inbox of channel {channel!r} is full ({self.inbox_capacity} messages)")
        elif not await self._sends.call((False, channel, "", data)):
            raise ChannelFull(f"channel {channel!r} is full ({self.capacity} messages)")

    async def _send_batch(self, calls: list[_SendCall]) -> list[bool]:
        inbox, target, name, data = (list(column) for column in zip(*calls, strict=True))
        admitted = set(await self._fetchval(
            sql.SEND_BATCH, self.prefix, inbox, target, name, data, self.expiry, self.capacity, self.inbox_capacity,
            self._notify_key,
        ))
        return [ordinal in admitted for ordinal in range(1, len(calls) + 1)]

    async def _watch(self, name: str) -> asyncio.Event:
        self._check_open()
        return await self._listener.watch(name)

    async def _settle(self) -> None:
        while self._leftovers:  # a pop that ends schedules its give-back: wait for that too
            await asyncio.wait(set(self._leftovers))

    async def _receive(self, channel: str) -> bytes | None:
        name = self._notify_name("c", channel)
        self._listener.touch(name)
        waker = await self._watch(name)
        deadline = asyncio.get_running_loop().time() + self.receive_timeout
        while True:
            waker.clear()
            row = await self._pop(channel)
            self._listener.touch(name)
            if row is not None:
                return bytes(row["data"])
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return None
            await self._listener.wait(waker, remaining)

    async def _pop(self, channel: str) -> Any:
        """One message's row, or ``None``. A pop is never cancelled once sent: when its receive
        leaves meanwhile, the row goes back in its place, so this process holds a named channel's
        messages only while a receive waits for them."""
        pop = asyncio.ensure_future(self._fetchrow(sql.POP_MESSAGE, self.prefix, channel))
        try:
            return await asyncio.shield(pop)
        except asyncio.CancelledError:
            self._leftovers.add(pop)
            pop.add_done_callback(functools.partial(self._popped_after_leaving, channel))
            raise

    def _popped_after_leaving(self, channel: str, pop: asyncio.Future[Any]) -> None:
        self._leftovers.discard(pop)
        if pop.cancelled() or pop.exception() is not None or pop.result() is None:
            return
        back = asyncio.ensure_future(self._give_back(channel, pop.result()))
        self._leftovers.add(back)
        back.add_done_callback(self._leftovers.discard)

    async def _give_back(self, channel: str, row: Any) -> None:
        try:
            await self._fetchval(sql.RESTORE_MESSAGE, row["id"], self.prefix, channel, row["data"],
                                 row["expires_at"], self._notify_key)
        except (BrokerUnavailable, ConfigurationError) as exc:
            logger.warning("a message of %r could not be put back after its receive left: %s", channel, exc)
            self.dropped += 1

    async def _consume_inbox(self, deliver: Callable[[bytes], None]) -> None:
        waker = await self._watch(self._inbox_name)
        while True:
            waker.clear()
            try:
                async with self._connection() as conn:
                    rows = await conn.fetch(self._sql(sql.DRAIN_INBOX), self.prefix, self.process_id, INBOX_BATCH)
            except BrokerUnavailable as exc:
                logger.debug("inbox poll failed: %s", exc)
                await asyncio.sleep(self.poll_interval)
                continue
            for row in sorted(rows, key=lambda row: row["id"]):
                if not row["live"]:
                    self.dropped += 1
                elif row["to_group"]:
                    deliver(self._group_entry(row["name"], row["data"]))
                else:
                    deliver(self._channel_entry(row["name"], row["data"]))
            await self._relieve()
            if len(rows) < INBOX_BATCH:
                await self._listener.wait(waker, SAFETY_POLL)

    async def _execute(self, template: str, *args: Any) -> None:
        async with self._connection() as conn:
            await conn.execute(self._sql(template), *args)

    async def _group_join(self, group: str) -> None:
        await self._group_refresh([group])

    async def _group_refresh(self, groups: list[str]) -> None:
        await self._execute(sql.JOIN, self.prefix, self.process_id, sorted(groups), self.lease)

    async def _group_leave(self, group: str) -> None:
        await self._execute(sql.LEAVE, self.prefix, [group], self.process_id)

    def _member(self, channel: str) -> tuple[int, str | None]:
        return (sql.REMOTE, process_of(channel)) if is_process_local(channel) else (sql.NAMED, None)

    async def _group_add_channel(self, group: str, channel: str) -> None:
        kind, process = self._member(channel)
        await self._execute(sql.ADD_CHANNEL, self.prefix, group, kind, channel, process, self.group_expiry)

    async def _group_discard_channel(self, group: str, channel: str) -> None:
        kind, _ = self._member(channel)
        await self._execute(sql.DISCARD_CHANNEL, self.prefix, group, kind, channel)

    async def _group_send(self, group: str, data: bytes) -> None:
        await self._fetchval(
            sql.GROUP_SEND, self.prefix, group, self.process_id, data, self.expiry, self.capacity,
            self.inbox_capacity, self._notify_key,
        )

    async def prune(self) -> int:
        """Delete expired messages and stale memberships in small batches; returns how many rows went."""
        total = 0
        for _ in range(PRUNE_MAX_BATCHES):
            async with self._connection() as conn:
                row = await conn.fetchrow(self._sql(sql.PRUNE), PRUNE_BATCH)
            counts: tuple[int, int, int] = tuple(row) if row is not None else (0, 0, 0)
            total += sum(counts)
            if max(counts) < PRUNE_BATCH:
                break
        return total

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self.prune_interval * random.uniform(0.5, 1.0))  # workers spread out
            try:
                await self.prune()
            except BrokerUnavailable as exc:
                logger.debug("prune skipped: %s", exc)
            except Exception:
                logger.exception("pruning the PostgreSQL channel tables failed")

    async def _flush(self) -> None:
        await self._fetchval(sql.FLUSH, self.prefix)

    async def _close(self) -> None:
        """Returns once the LISTEN connection and every pooled connection are closed."""
        self._sends.fail_pending(BrokerUnavailable("the channel layer closed before the message was sent"))
        deadline = asyncio.get_running_loop().time() + COMMAND_TIMEOUT
        while self._leftovers and (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.wait(set(self._leftovers), timeout=left)  # rows taken for a receive that left go back
        await self._listener.close()
        await cancel_and_wait([self._prune_task], timeout=CONNECT_TIMEOUT)
        async with self._start_lock:  # a pool being created now sees _closed and closes itself
            pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._schema_ready:  # nobody will read this process's inbox or memberships again
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CONNECT_TIMEOUT), pool.acquire() as conn:
                    await conn.execute(
                        self._sql(sql.FORGET_PROCESS), self.prefix, self.process_id, list(self._local_groups)
                    )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await pool.close()
        except Exception:
            pool.terminate()
