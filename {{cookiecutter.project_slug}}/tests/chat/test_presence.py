"""Presence on the in-memory layer: changes reach each watcher coalesced, once per window, made once; a window of
local changes is one broker message; the merged indexes stay right through deltas, snapshots, old-version
messages and a silent worker's expiry."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.channels import BaseChannelLayer
from app.channels.config import build_layer
from app.chat.presence import GROUP, NAMES_PER_CHANGE, WATCHERS_PER_WINDOW, Presence, PresenceChange, Watcher


@pytest.fixture
async def layer() -> AsyncIterator[BaseChannelLayer]:
    running = build_layer("inmemory", {})
    yield running
    await running.close()


@pytest.fixture
async def presence(layer: BaseChannelLayer) -> AsyncIterator[Presence]:
    running = Presence(layer, "worker-1", interval=60, notify_delay=0.05)
    await running.start()
    yield running
    await running.stop()


def watcher(heard: list[PresenceChange]) -> Watcher:
    async def watch(change: PresenceChange) -> None:
        heard.append(change)

    return watch


async def settle(presence: Presence) -> None:
    await asyncio.sleep(presence.notify_delay * 4)


def counting_sends(layer: BaseChannelLayer) -> list[dict[str, Any]]:
    """The messages ``layer.group_send`` is called with from now on (the real layer still sends them)."""
    sent: list[dict[str, Any]] = []
    real = layer.group_send

    async def group_send(group: str, message: dict[str, Any]) -> None:
        sent.append(message)
        await real(group, message)

    layer.group_send = group_send  # type: ignore[method-assign]
    return sent


class FakeWorker:
    """Another worker, played by hand on the same layer: sends what a worker sends, hears what it is sent."""

    def __init__(self, layer: BaseChannelLayer, name: str) -> None:
        self.layer, self.name, self.channel, self.seq = layer, name, "", 100

    async def start(self) -> FakeWorker:
        self.channel = await self.layer.new_channel("fake")
        return self

    async def delta(self, rooms: dict[str, tuple[list[str], list[str]]], sockets: dict[str, int] | None = None,
                    seq: int | None = None) -> None:
        """The next seq, or ``seq`` (an old or a skipping one)."""
        seq = self.seq + 1 if seq is None else seq
        self.seq = max(self.seq, seq)
        await self.layer.group_send(GROUP, {"type": "presence.delta", "worker": self.name, "channel": self.channel,
                                            "seq": seq, "rooms": rooms, "sockets": sockets or {}})

    async def snapshot(self, rooms: dict[str, list[str]], sockets: dict[str, int] | None = None) -> None:
        await self.layer.group_send(GROUP, {"type": "presence.snapshot", "worker": self.name, "channel": self.channel,
                                            "seq": self.seq, "rooms": rooms, "sockets": sockets or {}})

    async def heard(self, timeout: float = 2) -> dict[str, Any]:
        return await asyncio.wait_for(self.layer.receive(self.channel), timeout)


async def until(condition: Any, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - the state under test changes in another task
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------ watchers


async def test_a_burst_of_joins_is_one_change_shared_by_every_watcher(presence: Presence) -> None:
    heard: list[list[PresenceChange]] = [[], [], []]
    for seen in heard:
        presence.watch("lobby", watcher(seen))
    await asyncio.gather(*(presence.join("lobby", f"user{n:03}") for n in range(200)))
    await settle(presence)
    assert [len(seen) for seen in heard] == [1, 1, 1]
    change = heard[0][0]
    assert heard[1][0] is change and heard[2][0] is change
    # at most NAMES_PER_CHANGE names each way; the count is exact
    assert change.joined == tuple(f"user{n:03}" for n in range(NAMES_PER_CHANGE)) and change.count == 200
    assert change.left == ()


async def test_a_room_with_many_watchers_here_hears_less_often(presence: Presence) -> None:
    """Five times WATCHERS_PER_WINDOW watchers: their window is five notify_delays (each change is a frame to
    each of them), and changes in it are still one change."""
    heard: list[PresenceChange] = []
    presence.watch("hall", watcher(heard))
    for _ in range(5 * WATCHERS_PER_WINDOW - 1):
        presence.watch("hall", watcher([]))
    await presence.join("hall", "ann")
    await asyncio.sleep(presence.notify_delay * 2.5)
    await presence.join("hall", "bob")
    await asyncio.sleep(presence.notify_delay * 1.5)
    assert heard == []  # four delays in: not yet
    await asyncio.sleep(presence.notify_delay * 3)
    assert [(c.joined, c.count) for c in heard] == [(("ann", "bob"), 2)]


async def test_changes_after_a_notification_are_told_in_the_next(presence: Presence) -> None:
    heard: list[PresenceChange] = []
    presence.watch("lobby", watcher(heard))
    await presence.join("lobby", "ann")
    await settle(presence)
    await presence.join("lobby", "bob")
    await presence.leave("lobby", "ann")
    await settle(presence)
    assert [(c.joined, c.left, c.count) for c in heard] == [(("ann",), (), 1), (("bob",), ("ann",), 1)]


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
    assert [(c.joined, c.left, c.count) for c in late] == [(("bob",), ("ann",), 1)]
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


async def test_a_second_socket_or_worker_of_a_member_is_no_change(presence: Presence) -> None:
    other = Presence(presence.layer, "worker-2", interval=60, notify_delay=0.05)
    await other.start()
    try:
        heard: list[PresenceChange] = []
        presence.watch("lobby", watcher(heard))
        await presence.join("lobby", "ann")
        await presence.join("lobby", "ann")  # her second tab
        await other.join("lobby", "ann")  # and her phone, on another worker
        await until(lambda: bool(heard) and "worker-2" in presence.remote)  # worker-1 has heard of the phone
        await presence.leave("lobby", "ann")
        await presence.leave("lobby", "ann")  # both tabs closed: still in the room on worker-2
        await settle(presence)
        await settle(presence)
        assert [(c.joined, c.left, c.count) for c in heard] == [(("ann",), (), 1)]
        assert presence.members("lobby") == {"ann"} and presence.rooms_of("ann") == {"lobby"}
        await other.leave("lobby", "ann")
        await until(lambda: len(heard) == 2)
        assert (heard[1].left, heard[1].count) == (("ann",), 0)
        assert presence.members("lobby") == set() and presence.rooms_of("ann") == set() and presence.rooms() == {}
    finally:
        await other.stop()


async def test_another_workers_rooms_reach_the_watchers(presence: Presence) -> None:
    other = Presence(presence.layer, "worker-2", interval=60, notify_delay=0.05)
    await other.start()
    try:
        told: asyncio.Queue[PresenceChange] = asyncio.Queue()
        presence.watch("lobby", lambda change: told.put(change))
        await other.join("lobby", "zed")
        change = await asyncio.wait_for(told.get(), 5)
        assert change.joined == ("zed",) and change.count == 1 and presence.members("lobby") == {"zed"}
    finally:
        await other.stop()


# ------------------------------------------------------------------ batching


async def test_a_thousand_joins_and_sockets_are_one_broker_message(layer: BaseChannelLayer) -> None:
    one = Presence(layer, "worker-1", interval=60, notify_delay=0.5)
    two = Presence(layer, "worker-2", interval=60, notify_delay=0.05)
    await one.start()
    await two.start()
    try:
        await asyncio.sleep(0.1)  # the start-up syncs are answered
        sent = counting_sends(layer)
        users = [f"user{n:04}" for n in range(1000)]
        for user in users:
            await one.connected(user, +1)
            await one.join("big", user)
            await asyncio.sleep(0)  # as from 1,000 sockets' tasks: the flusher may run in between
        await one.leave("big", "user0999")
        await until(lambda: two.count("big") == 999)
        await asyncio.sleep(0.6)  # nothing more follows
        assert [m["type"] for m in sent] == ["presence.delta"], [m["type"] for m in sent]
        (here, gone), = sent[0]["rooms"].values()
        assert (len(here), gone) == (999, ["user0999"]) and len(sent[0]["sockets"]) == 1000
        assert two.sockets("user0500") == 1 and two.rooms_of("user0500") == {"big"}
        assert two.member_view("big", 3) == (["user0000", "user0001", "user0002"], 999)
        assert two.rooms() == {"big": 999}

        sent.clear()  # another window: one more message, with only what changed in it
        await one.leave("big", "user0000")
        await one.connected("user0000", -1)
        await until(lambda: two.count("big") == 998 and two.sockets("user0000") == 0)
        assert len(sent) == 1 and sent[0]["rooms"] == {"big": ([], ["user0000"])} and sent[0]["sockets"] == {
            "user0000": 0}
    finally:
        await two.stop()
        await one.stop()


# ------------------------------------------------------------------ the indexes


async def test_member_view_is_the_first_names_and_the_count(presence: Presence) -> None:
    names = [f"u{n:05}" for n in range(2000)]
    shuffled = random.Random(7).sample(names, len(names))
    for user in shuffled:
        await presence.join("hall", user)
    assert presence.member_view("hall", 5) == (names[:5], 2000)
    for user in names[:3]:
        await presence.leave("hall", user)
    assert presence.member_view("hall", 5) == (names[3:8], 1997)
    assert presence.member_view("hall", None)[0] == names[3:]
    assert presence.member_view("nowhere", 5) == ([], 0)


async def test_deltas_snapshots_and_a_silent_workers_expiry(layer: BaseChannelLayer) -> None:
    presence = Presence(layer, "worker-1", interval=0.5, notify_delay=0.02)
    await presence.start()
    far = await FakeWorker(layer, "far:1").start()
    try:
        heard: list[PresenceChange] = []
        presence.watch("lobby", watcher(heard))
        await presence.join("lobby", "ann")
        await presence.connected("ann", +1)

        await far.delta({"lobby": (["ann", "bob"], [])}, {"bob": 2, "ann": 1})
        assert (await far.heard())["type"] == "presence.sync"  # first heard of: asks for the whole view
        await until(lambda: presence.count("lobby") == 2)
        assert presence.sockets("bob") == 2 and presence.sockets("ann") == 2
        await far.snapshot({"lobby": ["bob"], "den": ["bob", "cat"]}, {"bob": 2, "cat": 1})
        await until(lambda: presence.rooms() == {"den": 2, "lobby": 2})
        assert presence.rooms_of("bob") == {"lobby", "den"} and presence.sockets("ann") == 1

        await far.delta({"den": ([], ["cat"])}, {"cat": 0}, seq=far.seq - 5)  # older than the snapshot: dropped
        await far.delta({"den": ([], ["bob"])}, {"bob": 1})
        await until(lambda: presence.rooms() == {"den": 1, "lobby": 2})
        assert presence.member_view("den", 10) == (["cat"], 1) and presence.sockets("bob") == 1

        await far.delta({"lobby": ([], ["bob"])}, seq=far.seq + 3)  # a gap: applied, and the view is asked for
        assert (await far.heard())["type"] == "presence.sync"
        await until(lambda: presence.count("lobby") == 1)

        # far goes silent: after three intervals its rooms and sockets leave, and the watchers hear it
        await far.delta({"lobby": (["dan"], [])}, {"dan": 1})
        await until(lambda: presence.count("lobby") == 2)
        await until(lambda: presence.count("lobby") == 1, timeout=3)
        assert presence.rooms() == {"lobby": 1} and presence.rooms_of("cat") == set() and presence.sockets("dan") == 0
        await until(lambda: heard and heard[-1].left == ("dan",))
        assert heard[-1].count == 1 and presence.members("lobby") == {"ann"}
    finally:
        await presence.stop()


async def test_messages_of_the_previous_version_are_applied(presence: Presence) -> None:
    """A rolling deploy: an old worker sends one room's full list and one user's sockets per change."""
    old = "old:7"
    await presence.layer.group_send(GROUP, {"type": "presence.room", "worker": old, "room": "lobby",
                                            "users": ["ann", "bob"]})
    await presence.layer.group_send(GROUP, {"type": "presence.sockets", "worker": old, "user": "ann", "count": 2})
    await until(lambda: presence.count("lobby") == 2 and presence.sockets("ann") == 2)
    await presence.layer.group_send(GROUP, {"type": "presence.room", "worker": old, "room": "lobby", "users": ["bob"]})
    await presence.layer.group_send(GROUP, {"type": "presence.snapshot", "worker": old,
                                            "rooms": {"lobby": ["bob"], "den": ["eve"]}, "sockets": {"bob": 1}})
    await until(lambda: presence.rooms() == {"den": 1, "lobby": 1})
    assert presence.sockets("ann") == 0 and presence.sockets("bob") == 1 and presence.rooms_of("eve") == {"den"}
    reply = await presence.layer.new_channel("old")  # and it answers an old worker's sync with a snapshot it reads
    await presence.join("hall", "zoe")
    await presence.layer.group_send(GROUP, {"type": "presence.sync", "worker": old, "reply_to": reply})
    snapshot = await asyncio.wait_for(presence.layer.receive(reply), 2)
    assert snapshot["type"] == "presence.snapshot" and snapshot["rooms"] == {"hall": ["zoe"]}


async def test_the_indexes_agree_with_every_workers_view_after_random_changes(layer: BaseChannelLayer) -> None:
    """Local joins and leaves, remote deltas and snapshots at random: the answers are what a full recount
    of every worker's view gives."""
    presence = Presence(layer, "worker-1", interval=60, notify_delay=0.01)
    await presence.start()
    fakes = [await FakeWorker(layer, f"fake:{n}").start() for n in range(3)]
    rng = random.Random(21)
    users, rooms = [f"u{n}" for n in range(12)], [f"r{n}" for n in range(4)]
    local: dict[tuple[str, str], int] = {}  # (room, user) -> sockets in it here
    remote: dict[str, dict[str, set[str]]] = {fake.name: {} for fake in fakes}
    try:
        for _ in range(300):
            roll, room, user = rng.random(), rng.choice(rooms), rng.choice(users)
            if roll < 0.3:
                await presence.join(room, user)
                local[room, user] = local.get((room, user), 0) + 1
            elif roll < 0.5:
                await presence.leave(room, user)
                if local.get((room, user), 0) > 1:
                    local[room, user] -= 1
                else:
                    local.pop((room, user), None)
            else:
                fake = rng.choice(fakes)
                view = remote[fake.name]
                if roll < 0.9:
                    here = rng.random() < 0.6
                    (view.setdefault(room, set()).add if here else view.setdefault(room, set()).discard)(user)
                    await fake.delta({room: ([user], []) if here else ([], [user])})
                else:
                    for name in rng.sample(rooms, 2):
                        view[name] = set(rng.sample(users, rng.randrange(4)))
                    await fake.snapshot({name: sorted(members) for name, members in view.items()})
            await asyncio.sleep(0)  # the listener keeps up (the in-memory channel holds 100 messages)

        def expected(room: str) -> set[str]:
            return {u for (r, u) in local if r == room} | {u for view in remote.values() for u in view.get(room, ())}

        await until(lambda: all(presence.members(room) == expected(room) for room in rooms))
        for room in rooms:
            assert presence.member_view(room, 3) == (sorted(expected(room))[:3], len(expected(room)))
        for user in users:
            assert presence.rooms_of(user) == {room for room in rooms if user in expected(room)}
        assert presence.rooms() == {room: len(expected(room)) for room in sorted(rooms) if expected(room)}
    finally:
        await presence.stop()
