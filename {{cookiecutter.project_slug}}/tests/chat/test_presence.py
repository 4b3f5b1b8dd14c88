"""Presence on the in-memory layer: changes reach each watcher coalesced, once per window, made once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.channels.config import build_layer
from app.chat.presence import Presence, PresenceChange, Watcher


@pytest.fixture
async def presence() -> AsyncIterator[Presence]:
    layer = build_layer("inmemory", {})
    running = Presence(layer, "worker-1", interval=60, notify_delay=0.05)
    await running.start()
    yield running
    await running.stop()
    await layer.close()


def watcher(heard: list[PresenceChange]) -> Watcher:
    async def watch(change: PresenceChange) -> None:
        heard.append(change)

    return watch


async def settle(presence: Presence) -> None:
    await asyncio.sleep(presence.notify_delay * 4)


async def test_a_burst_of_joins_is_one_change_shared_by_every_watcher(presence: Presence) -> None:
    heard: list[list[PresenceChange]] = [[], [], []]
    for seen in heard:
        presence.watch("lobby", watcher(seen))
    await asyncio.gather(*(presence.join("lobby", f"user{n:03}") for n in range(200)))
    await settle(presence)
    assert [len(seen) for seen in heard] == [1, 1, 1]
    change = heard[0][0]
    assert heard[1][0] is change and heard[2][0] is change
    assert change.joined == change.members == tuple(f"user{n:03}" for n in range(200)) and change.left == ()


async def test_changes_after_a_notification_are_told_in_the_next(presence: Presence) -> None:
    heard: list[PresenceChange] = []
    presence.watch("lobby", watcher(heard))
    await presence.join("lobby", "ann")
    await settle(presence)
    await presence.join("lobby", "bob")
    await presence.leave("lobby", "ann")
    await settle(presence)
    assert [(c.joined, c.left, c.members) for c in heard] == [(("ann",), (), ("ann",)), (("bob",), ("ann",), ("bob",))]


async def test_who_came_and_went_within_the_window_is_told_as_left(presence: Presence) -> None:
    """A watcher that started in between saw ann among the members: it must hear that she left."""
    heard: list[PresenceChange] = []
    presence.watch("lobby", watcher(heard))
    await presence.join("lobby", "ann")
    late: list[PresenceChange] = []
    presence.watch("lobby", watcher(late))
    assert presence.members("lobby") == {"ann"}  # what the late watcher's "joined" frame shows
    await presence.leave("lobby", "ann")
    await presence.join("lobby", "bob")
    await settle(presence)
    assert [(c.joined, c.left, c.members) for c in late] == [(("bob",), ("ann",), ("bob",))]
    assert heard == late  # one change for both


async def test_a_change_made_while_watchers_are_told_is_not_lost(presence: Presence) -> None:
    heard: list[PresenceChange] = []

    async def joins_a_friend(change: PresenceChange) -> None:
        heard.append(change)
        if change.joined == ("ann",):
            await presence.join("lobby", "bob")  # lands while the notifier is busy with this change

    presence.watch("lobby", joins_a_friend)
    await presence.join("lobby", "ann")
    await settle(presence)
    assert [c.joined for c in heard] == [("ann",), ("bob",)]


async def test_another_workers_rooms_reach_the_watchers(presence: Presence) -> None:
    other = Presence(presence.layer, "worker-2", interval=60, notify_delay=0.05)
    await other.start()
    try:
        told: asyncio.Queue[PresenceChange] = asyncio.Queue()
        presence.watch("lobby", lambda change: told.put(change))
        await other.join("lobby", "zed")
        change = await asyncio.wait_for(told.get(), 5)
        assert change.joined == ("zed",) and presence.members("lobby") == {"zed"}
    finally:
        await other.stop()
