"""The message store on real SQLite and PostgreSQL: contiguous seqs, idempotent sends, recovery, paging, pruning."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.db.engine import make_engine
from app.db.migrate import migrate
from app.messages.store import DIRECT, ROOM, MessageStore

from ..db.databases import KINDS, database


@pytest.fixture(params=KINDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[MessageStore, MessageStore]]:
    """Two stores on one migrated database, as two workers would have."""
    async with database(request.param, tmp_path) as url:
        await migrate(url)
        pair = (MessageStore(make_engine(url)), MessageStore(make_engine(url)))
        try:
            yield pair
        finally:
            for store in pair:
                await store.close()


async def test_concurrent_adds_from_two_workers_get_contiguous_seqs(stores: tuple[MessageStore, MessageStore]) -> None:
    a, b = stores
    sends = [(a if i % 2 else b).add(ROOM, f"r{i % 3}", "alice", f"m{i}") for i in range(120)]
    stored = await asyncio.gather(*sends)
    for room in ("r0", "r1", "r2"):
        seqs = sorted(m.seq for m in stored if m.stream == room)
        assert seqs == list(range(1, 41))
        history = await a.latest(ROOM, room, 100)
        assert [m.seq for m in history] == seqs
        assert [m.id for m in history] == sorted(m.id for m in history)  # seq order is id order
    assert await a.last_seq(ROOM, "r0") == 40
    assert await a.last_seq(DIRECT, "r0") == 0  # rooms and users count apart


async def test_a_resend_stores_nothing_new(stores: tuple[MessageStore, MessageStore]) -> None:
    a, b = stores
    first = await a.add(ROOM, "lobby", "alice", "hi", client_id="c-1")
    again, twin, other_user = await asyncio.gather(
        b.add(ROOM, "lobby", "alice", "hi", client_id="c-1"),
        a.add(ROOM, "lobby", "alice", "hi", client_id="c-1"),
        a.add(ROOM, "lobby", "bob", "hi", client_id="c-1"))
    assert not first.duplicate and again.duplicate and twin.duplicate and not other_user.duplicate
    assert (again.id, again.seq) == (twin.id, twin.seq) == (first.id, first.seq) == (first.id, 1)
    assert [(m.sender, m.seq) for m in await a.latest(ROOM, "lobby", 10)] == [("alice", 1), ("bob", 2)]
    in_one_batch = await asyncio.gather(*(a.add(ROOM, "lobby", "carol", "x", client_id="c-2") for _ in range(3)))
    assert len({m.id for m in in_one_batch}) == 1 and [m.duplicate for m in in_one_batch] == [False, True, True]
    assert await a.last_seq(ROOM, "lobby") == 3


async def test_since_recovers_everything_after_or_says_it_cannot(stores: tuple[MessageStore, MessageStore]) -> None:
    a, _ = stores
    for i in range(10):
        await a.add(ROOM, "lobby", "alice", f"m{i}")
    recovered, complete = await a.since(ROOM, "lobby", 4, limit=10)
    assert complete and [m.seq for m in recovered] == [5, 6, 7, 8, 9, 10]
    assert await a.since(ROOM, "lobby", 10, limit=10) == ([], True)
    latest, complete = await a.since(ROOM, "lobby", 2, limit=3)  # 8 missed, 3 allowed
    assert not complete and [m.seq for m in latest] == [8, 9, 10]
    _, complete = await a.since(ROOM, "lobby", 12, limit=3)  # the client is ahead of the store (a reset database)
    assert not complete


async def test_before_pages_back_and_prune_keeps_counting(stores: tuple[MessageStore, MessageStore]) -> None:
    a, _ = stores
    for i in range(7):
        await a.add(ROOM, "lobby", "alice", f"m{i}")
    newest = await a.before(ROOM, "lobby", None, 3)
    older = await a.before(ROOM, "lobby", newest[0].id, 3)
    assert [m.text for m in older + newest] == ["m1", "m2", "m3", "m4", "m5", "m6"]
    assert await a.prune(time.time() + 1) == 7
    assert await a.latest(ROOM, "lobby", 10) == []
    _, complete = await a.since(ROOM, "lobby", 3, limit=10)  # pruned away: not recoverable
    assert not complete
    assert (await a.add(ROOM, "lobby", "alice", "after")).seq == 8


async def test_recover_says_where_live_messages_follow(stores: tuple[MessageStore, MessageStore]) -> None:
    a, _ = stores
    assert await a.recover(ROOM, "lobby", None, 5, 10) == ([], 0, None)  # an empty room: live from seq 1
    for i in range(4):
        await a.add(ROOM, "lobby", "alice", f"m{i}")
    latest, last, recovered = await a.recover(ROOM, "lobby", None, 2, 10)
    assert ([m.seq for m in latest], last, recovered) == ([3, 4], 4, None)
    assert await a.recover(ROOM, "lobby", 4, 2, 10) == ([], 4, True)  # up to date
    _, last, recovered = await a.recover(ROOM, "lobby", 9, 2, 10)  # ahead of the store: start over
    assert (last, recovered) == (4, False)
