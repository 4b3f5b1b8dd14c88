"""The PostgreSQL layer (asyncpg): tables hold the messages, LISTEN/NOTIFY only wakes the readers.

Three tables in ``schema``, every row namespaced by ``prefix``:

* ``message``: one row per message to a named channel; read by ``DELETE ... FOR UPDATE SKIP LOCKED``,
  so two readers never get the same message.
* ``inbox``: one row per entry for a process (a group copy, or a message to one of its ``!`` channels);
  the process drains it in batches and fans out locally.
* ``membership``: a process's lease on a group (renewed every ``refresh_interval``), or a channel
  added to a group by name.

A ``group_send`` is one statement: it selects the live members, inserts one row per member process
and per named channel (capacity and expiry checked in the same statement), and calls ``pg_notify``
once per receiving process or channel. Concurrent ``send`` calls of one layer share one statement
(an ``INSERT ... SELECT FROM unnest(...)``, see ``batching.py``). Notifications carry no payload,
so message size is not bound by NOTIFY's 8000 bytes, and a missed notification only delays
delivery until the next poll.

Connections stay bounded per process: one LISTEN connection (opened on first receive) plus a pool of
``pool_size``. When the LISTEN connection drops, readers poll every ``poll_interval`` while it
reconnects; when PostgreSQL itself is down, operations raise ``BrokerUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import random
import re
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic_settings import BaseSettings

from ...base import BaseChannelLayer
from ...batching import AutoBatch
from ...exceptions import BrokerUnavailable, ChannelFull, ConfigurationError
from ...names import is_process_local, process_of
from ...tasks import cancel_and_wait
from .. import import_client

logger = logging.getLogger("app.channels")

#: Schema names we accept: a plain SQL identifier (and never a ``pg_`` system name).
SCHEMA_NAME = re.compile(r"(?!pg_)[A-Za-z_][A-Za-z0-9_]{0,62}")
RECEIVE_WAIT = 3.0  # _receive returns None after this long without a message
SAFETY_POLL = 5.0  # the inbox is re-read this often even when no notification came
HEALTH_INTERVAL = 10.0  # the LISTEN connection is pinged this often
IDLE_UNLISTEN = 300.0  # named channels nobody read for this long are UNLISTENed
MAX_RECONNECT_DELAY = 2.0
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 30.0
INBOX_BATCH = 64
SEND_BATCH = 256  # concurrent sends that share one statement at most
PRUNE_BATCH = 500
PRUNE_MAX_BATCHES = 20
SCHEMA_LOCK_CLASS = 0x66777331  # first key of pg_advisory_xact_lock(class, hashtext(schema))

_SendCall = tuple[bool, str, str, bytes]  # to an inbox?, its process or the named channel, channel, data

# membership.kind
_PROCESS = 0  # member is a process id: its inbox gets one group entry
_NAMED = 1  # member is a named channel: a row in ``message``
_REMOTE = 2  # member is a ``!`` channel: its process's inbox gets a channel entry

#: (version, DDL). Append new versions; never edit a released one. ``{s}`` is the quoted schema.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE {s}.message (
            id bigserial PRIMARY KEY,
            prefix text NOT NULL,
            channel text NOT NULL,
            data bytea NOT NULL,
            expires_at timestamptz NOT NULL
        );
        CREATE INDEX message_channel_idx ON {s}.message (prefix, channel, id);
        CREATE INDEX message_expiry_idx ON {s}.message (expires_at);
        ALTER TABLE {s}.message ALTER COLUMN data SET STORAGE EXTERNAL;
        CREATE TABLE {s}.inbox (
            id bigserial PRIMARY KEY,
            prefix text NOT NULL,
            process text NOT NULL,
            to_group boolean NOT NULL,
            name text NOT NULL,
            data bytea NOT NULL,
            expires_at timestamptz NOT NULL
        );
        CREATE INDEX inbox_process_idx ON {s}.inbox (prefix, process, id);
        CREATE INDEX inbox_expiry_idx ON {s}.inbox (expires_at);
        ALTER TABLE {s}.inbox ALTER COLUMN data SET STORAGE EXTERNAL;
        CREATE TABLE {s}.membership (
            prefix text NOT NULL,
            group_name text NOT NULL,
            kind smallint NOT NULL,
            member text NOT NULL,
            process text,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (prefix, group_name, kind, member)
        );
        CREATE INDEX membership_expiry_idx ON {s}.membership (expires_at);
        """,
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# Sends and reads commit asynchronously (statement-local; membership changes stay synchronous).
# A transaction that NOTIFYs holds a cluster-wide lock until its commit is done, so waiting for the
# WAL flush there halves send throughput, and a reader waiting for one flush per message falls
# behind its senders. The price, only on a PostgreSQL *crash* (not a restart): messages sent or
# read in the last WAL-writer interval (~0.2 s) may be lost or delivered again. Like Redis' AOF
# ``everysec``; a channel layer's messages are ephemeral anyway.
_ASYNC_COMMIT = "async_commit AS (SELECT set_config('synchronous_commit', 'off', true))"
# Concurrent sends of one layer go in one statement (batching.py). $1 prefix; per message:
# $2 to an inbox?, $3 its process or named channel, $4 the process-local channel (inbox rows),
# $5 data; $6 expiry seconds, $7 capacity, $8 inbox capacity, $9 notify key (see _notify_name).
# A message is admitted when its rank among this batch's messages to the same target, plus what
# the target already holds, stays within capacity; returns the ordinals (1-based) admitted.
_SEND_BATCH = """
    WITH {async_commit}, batch AS (
        SELECT b.*, row_number() OVER (PARTITION BY b.inbox, b.target ORDER BY b.ord) AS rank
        FROM unnest($2::bool[], $3::text[], $4::text[], $5::bytea[])
             WITH ORDINALITY AS b(inbox, target, name, data, ord)
    ), admitted AS (
        SELECT b.* FROM batch AS b
        WHERE b.rank + CASE WHEN b.inbox
            THEN (SELECT count(*) FROM (SELECT 1 FROM {s}.inbox AS i WHERE i.prefix = $1
                  AND i.process = b.target AND i.expires_at > now() LIMIT $8) AS held)
            ELSE (SELECT count(*) FROM (SELECT 1 FROM {s}.message AS m WHERE m.prefix = $1
                  AND m.channel = b.target AND m.expires_at > now() LIMIT $7) AS held)
            END <= CASE WHEN b.inbox THEN $8 ELSE $7 END
    ), to_inbox AS (
        INSERT INTO {s}.inbox (prefix, process, to_group, name, data, expires_at)
        SELECT $1, target, false, name, data, now() + make_interval(secs => $6)
        FROM admitted WHERE inbox ORDER BY ord
        RETURNING process
    ), to_channel AS (
        INSERT INTO {s}.message (prefix, channel, data, expires_at)
        SELECT $1, target, data, now() + make_interval(secs => $6)
        FROM admitted WHERE NOT inbox ORDER BY ord
        RETURNING channel
    ), notified AS (
        SELECT pg_notify('fws_' || md5($9 || t.target), '') FROM (
            SELECT 'p/' || process AS target FROM to_inbox
            UNION SELECT 'c/' || channel FROM to_channel
        ) AS t
    )
    SELECT array(SELECT ord FROM admitted) FROM (SELECT count(*) FROM notified) AS n, async_commit
"""
# $1 prefix, $2 group, $3 this process (its members get the message locally), $4 data,
# $5 expiry seconds, $6 capacity, $7 inbox capacity, $8 notify key (see _notify_name).
_GROUP_SEND = """
    WITH {async_commit}, members AS (
        SELECT kind, member, process FROM {s}.membership
        WHERE prefix = $1 AND group_name = $2 AND expires_at > now() AND NOT (kind = 0 AND member = $3)
    ), to_inbox AS (
        INSERT INTO {s}.inbox (prefix, process, to_group, name, data, expires_at)
        SELECT $1, m.process, m.kind = 0, CASE WHEN m.kind = 0 THEN $2 ELSE m.member END, $4,
               now() + make_interval(secs => $5)
        FROM members AS m
        WHERE m.kind <> 1 AND (SELECT count(*) FROM (SELECT 1 FROM {s}.inbox AS i
              WHERE i.prefix = $1 AND i.process = m.process AND i.expires_at > now() LIMIT $7) AS held) < $7
        RETURNING process
    ), to_channel AS (
        INSERT INTO {s}.message (prefix, channel, data, expires_at)
        SELECT $1, m.member, $4, now() + make_interval(secs => $5)
        FROM members AS m
        WHERE m.kind = 1 AND (SELECT count(*) FROM (SELECT 1 FROM {s}.message AS c
              WHERE c.prefix = $1 AND c.channel = m.member AND c.expires_at > now() LIMIT $6) AS held) < $6
        RETURNING channel
    )
    SELECT count(*) FROM (
        SELECT pg_notify('fws_' || md5($8 || t.target), '') FROM (
            SELECT 'p/' || process AS target FROM to_inbox
            UNION SELECT 'c/' || channel FROM to_channel
        ) AS t
    ) AS notified, async_commit
"""
_POP_MESSAGE = """
    WITH {async_commit}
    DELETE FROM {s}.message USING async_commit WHERE id = (
        SELECT id FROM {s}.message WHERE prefix = $1 AND channel = $2 AND expires_at > now()
        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING data
"""
_DRAIN_INBOX = """
    WITH {async_commit}
    DELETE FROM {s}.inbox USING async_commit WHERE id IN (
        SELECT id FROM {s}.inbox WHERE prefix = $1 AND process = $2
        ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
    RETURNING id, to_group, name, data, expires_at > now() AS live
"""
_JOIN = """
    INSERT INTO {s}.membership (prefix, group_name, kind, member, process, expires_at)
    SELECT $1, g, 0, $2, $2, now() + make_interval(secs => $4) FROM unnest($3::text[]) AS g
    ON CONFLICT (prefix, group_name, kind, member) DO UPDATE SET expires_at = excluded.expires_at
"""
_LEAVE = "DELETE FROM {s}.membership WHERE prefix = $1 AND group_name = ANY($2::text[]) AND kind = 0 AND member = $3"
_ADD_CHANNEL = """
    INSERT INTO {s}.membership (prefix, group_name, kind, member, process, expires_at)
    VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
    ON CONFLICT (prefix, group_name, kind, member) DO UPDATE SET expires_at = excluded.expires_at
"""
_DISCARD_CHANNEL = "DELETE FROM {s}.membership WHERE prefix = $1 AND group_name = $2 AND kind = $3 AND member = $4"
_FLUSH = """
    WITH m AS (DELETE FROM {s}.message WHERE prefix = $1),
         i AS (DELETE FROM {s}.inbox WHERE prefix = $1),
         g AS (DELETE FROM {s}.membership WHERE prefix = $1)
    SELECT 1
"""
_FORGET_PROCESS = """
    WITH i AS (DELETE FROM {s}.inbox WHERE prefix = $1 AND process = $2)
    DELETE FROM {s}.membership WHERE prefix = $1 AND group_name = ANY($3::text[]) AND kind = 0 AND member = $2
"""
_PRUNE = """
    WITH m AS (
        DELETE FROM {s}.message WHERE id IN (
            SELECT id FROM {s}.message WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING 1
    ), i AS (
        DELETE FROM {s}.inbox WHERE id IN (
            SELECT id FROM {s}.inbox WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING 1
    ), g AS (
        DELETE FROM {s}.membership WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM {s}.membership WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED))
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM i), (SELECT count(*) FROM g)
"""


def validate_schema_name(name: object) -> str:
    """Accept only a plain identifier, so a schema name can never carry SQL."""
    if not isinstance(name, str) or not SCHEMA_NAME.fullmatch(name):
        raise ConfigurationError(
            f"invalid PostgreSQL schema name {name!r}: use 1-63 ASCII letters, digits and '_',"
            " not starting with a digit or 'pg_'"
        )
    return name


async def _keep_session(_conn: Any) -> None:
    """Pool reset hook. The default runs ``RESET ALL; UNLISTEN *; ...``: one more round trip per
    query. Our statements leave no session state (transactions are managed, settings are local)."""


async def _wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``. Unlike 3.11's ``wait_for``, never swallows a cancel."""
    if event.is_set():
        return
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _redact(dsn: str) -> str:
    return re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", dsn)


with warnings.catch_warnings():
    # ``schema`` is the seed's variable name; it shadows the deprecated BaseModel.schema().
    warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

    class PostgreSQLEnv(BaseSettings):
        """``FASTAPI_WEBSOCKETS_POSTGRESQL_*``"""

        dsn: str | None = None
        schema: str | None = None  # type: ignore[assignment]
        prefix: str | None = None
        channel_expiry: float | None = None
        group_expiry: float | None = None
        capacity: int | None = None
        inbox_capacity: int | None = None
        poll_interval: float | None = None
        prune_interval: float | None = None
        ensure_schema: bool | None = None
        pool_size: int | None = None


class PostgreSQLChannelLayer(BaseChannelLayer):
    """Channels over PostgreSQL tables, woken by LISTEN/NOTIFY."""

    env_model = PostgreSQLEnv
    inbox_backpressure = True

    def __init__(
        self,
        *,
        dsn: str = "postgresql://localhost/postgres",
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
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigurationError(f"{key} must be positive, got {value!r}")
        self.schema = validate_schema_name(schema)
        self.dsn = dsn
        self.poll_interval = float(poll_interval)
        self.prune_interval = float(prune_interval)
        self.pool_size = int(pool_size)
        self._auto_schema = bool(ensure_schema)
        self._asyncpg = import_client("asyncpg", "postgresql")
        self._quoted = quote_ident(self.schema)
        self._notify_key = f"{self.schema}/{self.prefix}/"
        self._inbox_name = self._notify_name("p", self.process_id)
        self._pool: Any = None
        self._schema_ready = False
        self._start_lock = asyncio.Lock()
        self._listen_lock = asyncio.Lock()
        self._listener: Any = None  # the LISTEN connection while it is healthy
        self._wakers: dict[str, asyncio.Event] = {}  # notify channel -> event set on NOTIFY
        self._last_used: dict[str, float] = {}  # named notify channel -> monotonic time of last receive
        self._listen_task: asyncio.Task[None] | None = None
        self._prune_task: asyncio.Task[None] | None = None
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
        return template.replace("{async_commit}", _ASYNC_COMMIT).replace("{s}", self._quoted)

    def _notify_name(self, kind: str, name: str) -> str:
        """The NOTIFY channel of a process (``p``) or named channel (``c``): short, and per schema/prefix."""
        digest = hashlib.md5(f"{self._notify_key}{kind}/{name}".encode(), usedforsecurity=False).hexdigest()
        return f"fws_{digest}"

    # ------------------------------------------------------------------ connections

    def _unavailable(self, exc: BaseException) -> BrokerUnavailable:
        return BrokerUnavailable(f"PostgreSQL at {_redact(self.dsn)} is unavailable: {type(exc).__name__}: {exc}")

    def _connection_errors(self) -> tuple[type[BaseException], ...]:
        exceptions = self._asyncpg.exceptions
        return (
            OSError,  # refused, reset, TimeoutError
            exceptions.PostgresConnectionError,
            exceptions.InterfaceError,
            exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
            exceptions.InsufficientResourcesError,  # too many connections
            exceptions.InternalClientError,  # a connection left mid-protocol by a dying server
        )

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._start_lock:
                if self._pool is None:
                    self._check_open()
                    options: dict[str, Any] = {}
                    if "reset" in inspect.signature(self._asyncpg.create_pool).parameters:  # asyncpg >= 0.30
                        options["reset"] = _keep_session
                    self._pool = await self._asyncpg.create_pool(
                        self.dsn, min_size=0, max_size=self.pool_size, timeout=CONNECT_TIMEOUT,
                        command_timeout=COMMAND_TIMEOUT, server_settings=self._server_settings("pool"), **options,
                    )
                    loop = asyncio.get_running_loop()
                    self._prune_task = loop.create_task(self._prune_loop(), name="PostgreSQL prune")
        return self._pool

    def _server_settings(self, role: str) -> dict[str, str]:
        return {"application_name": f"app.channels {role} {self.process_id}"}

    @contextlib.asynccontextmanager
    async def _connection(self, *, schema: bool = True) -> AsyncIterator[Any]:
        """A pooled connection; connection failures become ``BrokerUnavailable``."""
        errors = self._connection_errors()
        try:
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
                except errors:
                    conn.terminate()  # never hand a connection in an unknown state out again
                    raise
        except BrokerUnavailable:
            raise
        except errors as exc:
            raise self._unavailable(exc) from exc
        except (self._asyncpg.exceptions.UndefinedTableError, self._asyncpg.exceptions.InvalidSchemaNameError) as exc:
            raise ConfigurationError(
                f"the channel layer tables are missing in schema {self.schema!r} ({exc}):"
                " set ensure_schema=True or call ensure_schema() once"
            ) from exc

    async def _fetchval(self, template: str, *args: Any) -> Any:
        async with self._connection() as conn:
            return await conn.fetchval(self._sql(template), *args)

    async def ensure_schema(self) -> int:
        """Create or upgrade the tables; returns the schema version.

        Idempotent, and safe when many workers start at once: the migrations run under a
        transaction-scoped advisory lock, recorded in ``schema_version``.
        """
        s = self._quoted
        async with self._connection(schema=False) as conn:
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{s}.schema_version"):
                found: int = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {s}.schema_version")
                if found >= SCHEMA_VERSION:  # the usual start: no lock, no DDL
                    return found
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", SCHEMA_LOCK_CLASS, self.schema)
                if not await conn.fetchval("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", self.schema):
                    await conn.execute(f"CREATE SCHEMA {s}")
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {s}.schema_version"
                    " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                current: int = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {s}.schema_version")
                for version, ddl in MIGRATIONS:
                    if version > current:
                        await conn.execute(self._sql(ddl))
                        await conn.execute(f"INSERT INTO {s}.schema_version (version) VALUES ($1)", version)
                        current = version
                if current > SCHEMA_VERSION:
                    logger.warning("schema %s is at version %d, newer than this code (%d)", s, current, SCHEMA_VERSION)
                return current

    # ------------------------------------------------------------------ LISTEN

    def _on_notify(self, _conn: Any, _pid: int, channel: str, _payload: str) -> None:
        waker = self._wakers.get(channel)
        if waker is not None:
            waker.set()

    def _wake_all(self) -> None:
        for waker in self._wakers.values():
            waker.set()

    async def _watch(self, name: str) -> asyncio.Event:
        """The event a NOTIFY on ``name`` sets; LISTENs on it before returning when connected."""
        waker = self._wakers.get(name)
        if waker is not None:
            return waker
        self._check_open()
        waker = self._wakers[name] = asyncio.Event()
        if self._listen_task is None:
            self._listen_task = asyncio.get_running_loop().create_task(self._listen_loop(), name="PostgreSQL listen")
        async with self._listen_lock:
            conn = self._listener
            if conn is not None:
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        await conn.add_listener(name, self._on_notify)
                except Exception as exc:  # the loop reconnects and LISTENs to every name again
                    logger.warning("LISTEN failed (%s); reconnecting", exc)
                    self._listener = None
                    conn.terminate()
        return waker

    async def _listen_loop(self) -> None:
        """Keep one LISTEN connection; while it is down, readers poll every ``poll_interval``."""
        delay = self.poll_interval
        while True:
            conn: Any = None
            lost = asyncio.Event()
            try:
                conn = await self._asyncpg.connect(
                    self.dsn, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT,
                    server_settings=self._server_settings("listen"),
                )
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                async with self._listen_lock:
                    for name in list(self._wakers):
                        async with asyncio.timeout(CONNECT_TIMEOUT):
                            await conn.add_listener(name, self._on_notify)
                    self._listener = conn
                if delay > self.poll_interval:
                    logger.info("PostgreSQL LISTEN connection restored")
                delay = self.poll_interval
                self._wake_all()  # anything sent while nobody listened
                while not lost.is_set():
                    await _wait_event(lost, HEALTH_INTERVAL)
                    if not lost.is_set():
                        async with self._listen_lock:
                            await conn.execute("SELECT 1", timeout=CONNECT_TIMEOUT)
                            await self._unlisten_idle(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log = logger.warning if delay <= self.poll_interval else logger.debug
                log("PostgreSQL LISTEN connection failed (%s); polling every %.2fs", exc, self.poll_interval)
            finally:
                self._listener = None
                if conn is not None:
                    conn.terminate()
                self._wake_all()  # readers switch to polling
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, MAX_RECONNECT_DELAY)

    async def _unlisten_idle(self, conn: Any) -> None:
        cutoff = time.monotonic() - IDLE_UNLISTEN
        for name, used in list(self._last_used.items()):
            if used < cutoff:
                del self._last_used[name]
                self._wakers.pop(name, None)
                await conn.remove_listener(name, self._on_notify)

    async def _wait(self, waker: asyncio.Event, longest: float) -> None:
        """Sleep until ``waker`` fires, at most ``longest``, or ``poll_interval`` while not listening."""
        timeout = longest if self._listener is not None else min(longest, self.poll_interval)
        await _wait_event(waker, timeout)

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
            _SEND_BATCH, self.prefix, inbox, target, name, data, self.expiry, self.capacity, self.inbox_capacity,
            self._notify_key,
        ))
        return [ordinal in admitted for ordinal in range(1, len(calls) + 1)]

    async def _receive(self, channel: str) -> bytes | None:
        name = self._notify_name("c", channel)
        self._last_used[name] = time.monotonic()
        waker = await self._watch(name)
        deadline = time.monotonic() + RECEIVE_WAIT
        while True:
            waker.clear()
            data = await self._fetchval(_POP_MESSAGE, self.prefix, channel)
            self._last_used[name] = time.monotonic()
            if data is not None:
                return bytes(data)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await self._wait(waker, remaining)

    async def _consume_inbox(self, deliver: Callable[[bytes], None]) -> None:
        waker = await self._watch(self._inbox_name)
        while True:
            waker.clear()
            try:
                async with self._connection() as conn:
                    rows = await conn.fetch(self._sql(_DRAIN_INBOX), self.prefix, self.process_id, INBOX_BATCH)
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
                await self._wait(waker, SAFETY_POLL)

    async def _group_join(self, group: str) -> None:
        await self._group_refresh([group])

    async def _group_refresh(self, groups: list[str]) -> None:
        async with self._connection() as conn:
            await conn.execute(self._sql(_JOIN), self.prefix, self.process_id, sorted(groups), self.lease)

    async def _group_leave(self, group: str) -> None:
        async with self._connection() as conn:
            await conn.execute(self._sql(_LEAVE), self.prefix, [group], self.process_id)

    def _member(self, channel: str) -> tuple[int, str | None]:
        return (_REMOTE, process_of(channel)) if is_process_local(channel) else (_NAMED, None)

    async def _group_add_channel(self, group: str, channel: str) -> None:
        kind, process = self._member(channel)
        async with self._connection() as conn:
            await conn.execute(
                self._sql(_ADD_CHANNEL), self.prefix, group, kind, channel, process, self.group_expiry
            )

    async def _group_discard_channel(self, group: str, channel: str) -> None:
        kind, _ = self._member(channel)
        async with self._connection() as conn:
            await conn.execute(self._sql(_DISCARD_CHANNEL), self.prefix, group, kind, channel)

    async def _group_send(self, group: str, data: bytes) -> None:
        await self._fetchval(
            _GROUP_SEND, self.prefix, group, self.process_id, data, self.expiry, self.capacity,
            self.inbox_capacity, self._notify_key,
        )

    async def prune(self) -> int:
        """Delete expired messages and stale memberships in small batches; returns how many rows went."""
        total = 0
        for _ in range(PRUNE_MAX_BATCHES):
            async with self._connection() as conn:
                counts = await conn.fetchrow(self._sql(_PRUNE), PRUNE_BATCH)
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
        await self._fetchval(_FLUSH, self.prefix)

    async def _close(self) -> None:
        self._sends.fail_pending(BrokerUnavailable("the channel layer closed before the message was sent"))
        await cancel_and_wait([self._listen_task, self._prune_task], timeout=CONNECT_TIMEOUT)
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._schema_ready:  # nobody will read this process's inbox or memberships again
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CONNECT_TIMEOUT), pool.acquire() as conn:
                    await conn.execute(
                        self._sql(_FORGET_PROCESS), self.prefix, self.process_id, list(self._local_groups)
                    )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await pool.close()
        except Exception:
            pool.terminate()
