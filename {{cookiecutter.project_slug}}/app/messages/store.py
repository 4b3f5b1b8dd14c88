"""The message store: every room and direct message is written here, with its ``seq``, before fan-out.

Writes are batched: concurrent :meth:`MessageStore.add` calls of one process share one
transaction (one counter update per stream, one multi-row INSERT), so a busy worker pays one
round trip per batch rather than per message. The counter row of a stream is locked by its
update until commit, so seqs are contiguous and a stream's seq ``n`` is committed before
``n + 1`` is assigned. Streams are updated in sorted order, so two batches never deadlock.
A resend (same sender and ``client_id``) returns the stored message and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import Row, Table, and_, bindparam, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .models import Message, StreamSeq

ROOM, DIRECT = "room", "direct"
MAX_BATCH = 256
messages = cast(Table, Message.__table__)
stream_seq = cast(Table, StreamSeq.__table__)
# The reads of every (re)join, built once: building a statement costs more than running it on SQLite.
_LAST_SEQ = select(stream_seq.c.seq).where(stream_seq.c.kind == bindparam("kind"),
                                           stream_seq.c.stream == bindparam("stream"))
# the stream's last seq and the messages after ``after`` in one statement (one snapshot): a row with no
# message when none follows, no row when the stream has none at all
_SINCE = (select(stream_seq.c.seq.label("stream_last"), *messages.c)
          .select_from(stream_seq.outerjoin(messages, and_(messages.c.kind == stream_seq.c.kind,
                                                           messages.c.stream == stream_seq.c.stream,
                                                           messages.c.seq > bindparam("after"))))
          .where(stream_seq.c.kind == bindparam("kind"), stream_seq.c.stream == bindparam("stream"))
          .order_by(messages.c.seq).limit(bindparam("limit")))
_LATEST = (select(messages).where(messages.c.kind == bindparam("kind"), messages.c.stream == bindparam("stream"))
           .order_by(messages.c.id.desc()).limit(bindparam("limit")))


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored message; ``duplicate`` when an earlier send with the same ``client_id`` stored it."""

    id: int
    kind: str
    stream: str
    seq: int
    sender: str
    text: str
    ts: float
    client_id: str | None = None
    duplicate: bool = False

    @classmethod
    def from_row(cls, row: Row[Any]) -> Stored:
        return cls(row.id, row.kind, row.stream, row.seq, row.sender, row.text, row.ts, row.client_id)


@dataclass(frozen=True, slots=True)
class _Draft:
    kind: str
    stream: str
    sender: str
    text: str
    client_id: str | None


class MessageStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        self._pending: list[tuple[_Draft, asyncio.Future[Stored]]] = []
        self._writer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ writes

    async def add(self, kind: str, stream: str, sender: str, text: str, client_id: str | None = None) -> Stored:
        """Store one message (or find its earlier send) and return it with its ``seq``."""
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._pending.append((_Draft(kind, stream, sender, text, client_id), future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                stored = await self._write([draft for draft, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), message in zip(batch, stored, strict=True):
                if not future.done():
                    future.set_result(message)

    async def _write(self, drafts: list[_Draft]) -> list[Stored]:
        for attempt in range(3):
            try:
                async with self.engine.begin() as connection:
                    return await self._write_in(connection, drafts)
            except IntegrityError:  # another worker stored one of these client_ids meanwhile: look again
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _write_in(self, connection: AsyncConnection, drafts: list[_Draft]) -> list[Stored]:
        keys = {(d.sender, d.client_id) for d in drafts if d.client_id is not None}
        known: dict[tuple[str, str | None], Stored] = {}
        if keys:
            rows = await connection.execute(
                select(messages).where(tuple_(messages.c.sender, messages.c.client_id).in_(list(keys))))
            known = {(row.sender, row.client_id): replace(Stored.from_row(row), duplicate=True) for row in rows}
        fresh: list[_Draft] = []
        first: dict[tuple[str, str | None], int] = {}  # a client_id's first draft in this batch
        slots: list[tuple[str, Any]] = []  # per draft: ("known", key), ("fresh", i) or ("repeat", i)
        for draft in drafts:
            key = (draft.sender, draft.client_id)
            if draft.client_id is not None and key in known:
                slots.append(("known", key))
            elif draft.client_id is not None and key in first:
                slots.append(("repeat", first[key]))
            else:
                if draft.client_id is not None:
                    first[key] = len(fresh)
                slots.append(("fresh", len(fresh)))
                fresh.append(draft)
        stored = await self._insert_fresh(connection, fresh)
        return [known[ref] if tag == "known" else stored[ref] if tag == "fresh"
                else replace(stored[ref], duplicate=True) for tag, ref in slots]

    async def _insert_fresh(self, connection: AsyncConnection, fresh: list[_Draft]) -> list[Stored]:
        if not fresh:
            return []
        next_seq: dict[tuple[str, str], int] = {}
        for kind, stream in sorted({(d.kind, d.stream) for d in fresh}):
            count = sum(1 for d in fresh if (d.kind, d.stream) == (kind, stream))
            upsert = self._insert(stream_seq).values(kind=kind, stream=stream, seq=count).on_conflict_do_update(
                index_elements=["kind", "stream"], set_={"seq": stream_seq.c.seq + count})
            last = (await connection.execute(upsert.returning(stream_seq.c.seq))).scalar_one()
            next_seq[(kind, stream)] = last - count + 1
        now = time.time()
        values: list[dict[str, Any]] = []
        for draft in fresh:
            seq = next_seq[(draft.kind, draft.stream)]
            next_seq[(draft.kind, draft.stream)] = seq + 1
            values.append({"kind": draft.kind, "stream": draft.stream, "seq": seq, "sender": draft.sender,
                           "text": draft.text, "ts": now, "client_id": draft.client_id})
        ids = (await connection.execute(
            messages.insert().returning(messages.c.id, sort_by_parameter_order=True), values)).scalars().all()
        return [Stored(id=message_id, **value) for value, message_id in zip(values, ids, strict=True)]

    async def prune(self, older_than: float) -> int:
        """Delete messages stored before ``older_than`` (a Unix time); stream counters stay, so seqs go on."""
        async with self.engine.begin() as connection:
            if self.engine.dialect.name == "postgresql":  # one worker at a time; the others skip this round
                locked = (await connection.execute(select(func.pg_try_advisory_xact_lock(0x70727565)))).scalar()
                if not locked:
                    return 0
            result = await connection.execute(delete(messages).where(messages.c.ts < older_than))
            return int(result.rowcount or 0)

    # ------------------------------------------------------------------ reads

    async def latest(self, kind: str, stream: str, limit: int) -> list[Stored]:
        """The newest ``limit`` messages of a stream, oldest first."""
        return await self._page(kind, stream, None, limit)

    async def before(self, kind: str, stream: str, before_id: int | None, limit: int) -> list[Stored]:
        """Up to ``limit`` messages older than ``before_id`` (paging back), oldest first."""
        return await self._page(kind, stream, before_id, limit)

    async def since(self, kind: str, stream: str, after_seq: int, limit: int) -> tuple[list[Stored], bool]:
        """Every message with seq > ``after_seq`` in order, and True; or, when that is more than
        ``limit`` (or some were pruned, or the client is ahead of the store), the latest and False."""
        if limit <= 0:
            return [], False
        async with self.engine.connect() as connection:
            found = (await connection.execute(
                _SINCE, {"kind": kind, "stream": stream, "after": after_seq, "limit": limit + 1})).all()
        last = int(found[0].stream_last) if found else 0
        rows = [row for row in found if row.id is not None]
        # empty and last > after_seq: pruned; last < after_seq: the client is ahead of this database
        complete = len(rows) <= limit and (rows[0].seq == after_seq + 1 if rows else last == after_seq)
        if not complete:
            return await self.latest(kind, stream, limit), False
        return [Stored.from_row(row) for row in rows], True

    async def recover(self, kind: str, stream: str, since: int | None, latest: int,
                      limit: int) -> tuple[list[Stored], int, bool | None]:
        """What a (re)joining socket is sent: the latest ``latest`` messages (``since`` None) or those after
        ``since``; the seq live messages follow; whether the recovery was complete (None: none asked)."""
        recovered: bool | None = None
        if since is None:
            stored = await self.latest(kind, stream, latest)
        else:
            stored, recovered = await self.since(kind, stream, since, limit)
        if stored:
            return stored, stored[-1].seq, recovered
        last = since if recovered and since is not None else await self.last_seq(kind, stream)
        return stored, last, recovered

    async def last_seq(self, kind: str, stream: str) -> int:
        async with self.engine.connect() as connection:
            return await self._last_seq(connection, kind, stream)

    async def _last_seq(self, connection: AsyncConnection, kind: str, stream: str) -> int:
        seq = (await connection.execute(_LAST_SEQ, {"kind": kind, "stream": stream})).scalar()
        return int(seq or 0)

    async def _page(self, kind: str, stream: str, before_id: int | None, limit: int) -> list[Stored]:
        if limit <= 0:
            return []
        query = _LATEST if before_id is None else _LATEST.where(messages.c.id < before_id)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query, {"kind": kind, "stream": stream, "limit": limit})).all()
        return [Stored.from_row(row) for row in reversed(rows)]

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
        await self.engine.dispose()

