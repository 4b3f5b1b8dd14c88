"""Who is in which room, across every worker and host, kept with the channel layer alone.

Each worker counts its own connections per room. What changed here within ``notify_delay`` goes to
the group ``presence`` as ONE ``presence.delta`` message (per room the users this worker now has or
no longer has, per user its open sockets here), numbered by ``seq``; a full snapshot follows every
``interval`` seconds. Every worker merges what it hears into indexes (presence_index.py) that answer
who is in a room, how many, a user's rooms and sockets in time of the answer. A delta that skips a
``seq`` (the broker lost one), or comes from a worker not heard in full yet, makes the receiver ask
that worker for its snapshot; one older than what is held is dropped. A worker that stops sending
(it died) drops out after three intervals. A new worker asks the others for their snapshots.

Rolling deploys: the previous version's ``presence.room`` and ``presence.sockets`` messages (and its
snapshots, which carry no ``seq``) are still applied. A worker of the previous version does not
understand ``presence.delta`` (it logs it as a bad message) and learns of this version's workers from
their snapshots, so its view of them lags by up to ``interval`` until it is replaced too.

Watchers of a room hear of its changes at most once per ``notify_delay``, as one change made once
for all of them: a room that 1,000 people join at once costs 1,000 frames, not a million. A room
watched by many sockets here waits longer (one frame per watcher per window is the cost): the
window grows with its watchers past ``WATCHERS_PER_WINDOW``, up to ``interval``; a change names at
most ``NAMES_PER_CHANGE`` users each way (its count is always exact). A watcher
may have started (and seen the members) at any moment of that window, so a change names as left
everyone who was there at any moment of it and is gone, and as joined everyone who was not there
at some moment of it and is there now: every user whose membership flipped in the window, by where
they are at its end. Changes carry the room's member count, never its member list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Set
from dataclasses import dataclass
from typing import Any

from ..channels import BaseChannelLayer, ChannelLayerError
from ..channels.broker import Backoff
from ..channels.tasks import cancel_and_wait
from .presence_index import PresenceIndex

logger = logging.getLogger(__name__)

GROUP = "presence"
#: A room watched by more sockets than this (here) hears of changes less often, in proportion.
WATCHERS_PER_WINDOW = 20
#: The most names a presence change lists as joined, and as left.
NAMES_PER_CHANGE = 100


@dataclass(frozen=True, eq=False)  # hashed by identity: one change, encoded once for all its watchers
class PresenceChange:
    room: str
    joined: tuple[str, ...]
    left: tuple[str, ...]
    count: int  # the room's members after the change


Watcher = Callable[[PresenceChange], Awaitable[None]]


@dataclass
class Peer:
    """What this worker knows of another one's messages."""

    expires_at: float
    seq: int | None = None  # the last applied; None: a worker of the previous version
    complete: bool = False  # a snapshot was applied since the last gap
    asked_at: float = float("-inf")


class Presence:
    def __init__(self, layer: BaseChannelLayer, worker_id: str, interval: float = 5.0,
                 notify_delay: float = 0.1) -> None:
        self.layer = layer
        self.worker_id = worker_id
        self.interval = interval
        self.notify_delay = notify_delay
        self.local: dict[str, Counter[str]] = {}  # room -> user -> sockets in it here
        self.local_sockets: Counter[str] = Counter()  # user -> open sockets here
        self.index = PresenceIndex(self._flipped)  # every worker's view merged, this one's too
        self.remote: dict[str, Peer] = {}
        self.watchers: dict[str, set[Watcher]] = {}
        self.channel = ""
        self._seq = time.time_ns()  # increasing across restarts of a worker that keeps its id
        self._tasks: list[asyncio.Task[None]] = []
        self._unnotified: dict[str, set[str]] = {}  # room -> users whose membership flipped in this window
        self._due: dict[str, float] = {}  # room -> when its watchers hear of what flipped
        self._notifier: asyncio.Task[None] | None = None
        self._out_rooms: dict[str, set[str]] = {}  # room -> users whose presence here changed, not yet sent
        self._out_sockets: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Join presence; a broker that is down at boot delays that (retried), not the worker's start,
        so a worker boots during an outage (``/readyz`` answers 503 meanwhile) instead of exiting."""
        self.channel = await self.layer.new_channel("presence")
        try:
            await self._join()
        except ChannelLayerError as exc:
            logger.warning("presence: the channel layer is unavailable (%s); joining in the background", exc)
            self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._join_then_beat())]
            return
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._heartbeat())]

    async def _join(self) -> None:
        await self.layer.group_add(GROUP, self.channel)
        await self.layer.group_send(GROUP, self._sync_request())

    async def _join_then_beat(self) -> None:
        backoff = Backoff(0.2, 5.0)
        while True:
            await asyncio.sleep(backoff.next())
            try:
                await self._join()
            except ChannelLayerError as exc:
                logger.warning("presence: the channel layer is still unavailable (%s)", exc)
                continue
            logger.info("presence: joined after the channel layer came back")
            break
        await self._heartbeat()

    async def stop(self) -> None:
        await cancel_and_wait([*self._tasks, self._notifier, self._flusher])
        if not self.layer.closed:  # an empty snapshot: also what the cancelled flush had not sent yet
            self.local.clear()
            with contextlib.suppress(Exception):
                await self.layer.group_send(GROUP, {**self._snapshot(), "sockets": {}})
        with contextlib.suppress(Exception):
            await self.layer.group_discard(GROUP, self.channel)

    # ------------------------------------------------------------------ queries

    def members(self, room: str) -> Set[str]:
        """A live read-only set (``in`` and ``len`` in O(1)); copy it to keep it across an await."""
        return self.index.members(room)

    def count(self, room: str) -> int:
        return self.index.count(room)

    def member_view(self, room: str, limit: int | None) -> tuple[list[str], int]:
        """The first ``limit`` members by name, and how many there are: O(limit), the sorted list is
        kept up to date as members come and go, so a burst of joins never sorts the room again."""
        return self.index.first(room, limit), self.index.count(room)

    def rooms_of(self, user: str) -> frozenset[str]:
        """The rooms ``user`` is in on any socket, on any worker."""
        return self.index.rooms_of(user)

    def sockets(self, user: str) -> int:
        """Open sockets of ``user`` on every worker (another worker's count is as fresh as its last message)."""
        return self.index.sockets(user)

    def rooms(self) -> dict[str, int]:
        return self.index.rooms()

    # ------------------------------------------------------------------ local changes

    def watch(self, room: str, watcher: Watcher) -> None:
        self.watchers.setdefault(room, set()).add(watcher)

    def unwatch(self, room: str, watcher: Watcher) -> None:
        watchers = self.watchers.get(room)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self.watchers[room]

    async def join(self, room: str, user: str) -> None:
        counts = self.local.setdefault(room, Counter())
        counts[user] += 1
        if counts[user] == 1:
            self.index.set_present(self.worker_id, room, user, True)
            self._queue(room, user)

    async def leave(self, room: str, user: str) -> None:
        counts = self.local.get(room)
        if counts is None or user not in counts:
            return
        counts[user] -= 1
        if counts[user] > 0:
            return
        del counts[user]
        if not counts:
            del self.local[room]
        self.index.set_present(self.worker_id, room, user, False)
        self._queue(room, user)

    async def connected(self, user: str, delta: int) -> None:
        """A socket of ``user`` opened (+1) or closed (-1) here; the other workers hear of it within
        ``notify_delay``, this worker at once."""
        self.local_sockets[user] += delta
        if self.local_sockets[user] <= 0:
            del self.local_sockets[user]
        self.index.set_sockets(self.worker_id, user, self.local_sockets.get(user, 0))
        self._out_sockets.add(user)
        self._schedule_flush()

    # ------------------------------------------------------------------ telling the other workers

    def _queue(self, room: str, user: str) -> None:
        self._out_rooms.setdefault(room, set()).add(user)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        """One broker message per window, whatever happened in it; a lost one is healed by a snapshot."""
        try:
            while self._out_rooms or self._out_sockets:
                await asyncio.sleep(self.notify_delay)
                rooms, self._out_rooms = self._out_rooms, {}
                users, self._out_sockets = self._out_sockets, set()
                self._seq += 1
                delta = {"type": "presence.delta", "worker": self.worker_id, "channel": self.channel, "seq": self._seq,
                         "rooms": {room: self._states(room, touched) for room, touched in rooms.items()},
                         "sockets": {user: self.local_sockets.get(user, 0) for user in users}}
                try:
                    await self.layer.group_send(GROUP, delta)
                except Exception as exc:  # the others see the seq skip and ask for a snapshot
                    logger.warning("presence: a delta was not sent (%s)", type(exc).__name__)
        finally:
            self._flusher = None

    def _states(self, room: str, users: set[str]) -> tuple[list[str], list[str]]:
        """``users`` split into those in ``room`` here now and those not: states, so a repeat is harmless."""
        counts = self.local.get(room, Counter())
        here = [user for user in users if counts.get(user)]
        return here, [user for user in users if not counts.get(user)]

    def _snapshot(self) -> dict[str, Any]:
        return {"type": "presence.snapshot", "worker": self.worker_id, "channel": self.channel, "seq": self._seq,
                "rooms": {room: list(counts) for room, counts in self.local.items()},
                "sockets": dict(self.local_sockets)}

    def _sync_request(self) -> dict[str, Any]:
        return {"type": "presence.sync", "worker": self.worker_id, "reply_to": self.channel}

    async def _heartbeat(self) -> None:
        """A snapshot every ``interval``; in between, wakes when a silent worker is due to expire."""
        next_beat = time.monotonic() + self.interval
        while True:
            due = min([next_beat, *(peer.expires_at for peer in self.remote.values())])
            await asyncio.sleep(max(due - time.monotonic(), 0.01))
            self._expire()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.interval
                try:
                    await self.layer.group_send(GROUP, self._snapshot())
                except Exception as exc:
                    logger.warning("presence heartbeat failed: %s", exc)

    def _expire(self) -> None:
        now = time.monotonic()
        for worker, peer in list(self.remote.items()):
            if peer.expires_at < now:
                del self.remote[worker]
                view = self.index.drop(worker)
                logger.info("presence: worker %s went silent; dropping its %d rooms", worker,
                            len(view.rooms) if view else 0)

    # ------------------------------------------------------------------ hearing the other workers

    async def _listen(self) -> None:
        while True:
            message = await self.layer.receive(self.channel)
            try:
                await self._apply(message)
            except Exception:
                logger.exception("bad presence message %r", message.get("type"))

    async def _apply(self, message: dict[str, Any]) -> None:
        worker = message["worker"]
        if worker == self.worker_id:
            return
        kind = message["type"]
        if kind == "presence.sync":
            await self.layer.send(message["reply_to"], self._snapshot())
            return
        now = time.monotonic()
        peer = self.remote.get(worker)
        if peer is None:
            peer = self.remote[worker] = Peer(now)
        peer.expires_at = now + 3 * self.interval
        seq = message.get("seq")
        if self._stale(peer, seq, kind):
            if not peer.complete:  # a snapshot older than a delta already applied: ask again
                await self._ask(peer, message)
            return  # older than what is applied
        if kind == "presence.snapshot":
            self.index.replace(worker, message["rooms"], message.get("sockets", {}))
            peer.seq, peer.complete, peer.asked_at = seq, True, float("-inf")  # the next gap may ask at once
        elif kind == "presence.delta":
            if not peer.complete or (peer.seq is not None and seq != peer.seq + 1):
                peer.complete = False
                await self._ask(peer, message)
            self._apply_delta(worker, message)
            peer.seq = seq
        elif kind == "presence.room":  # the previous version: one room's full list
            self.index.set_room(worker, message["room"], message["users"])
        elif kind == "presence.sockets":  # the previous version: one user's sockets
            self.index.set_sockets(worker, message["user"], int(message["count"]))

    @staticmethod
    def _stale(peer: Peer, seq: int | None, kind: str) -> bool:
        """Older than what is applied: a delta up to the last seq, a snapshot before it."""
        if seq is None or peer.seq is None:
            return False
        return seq < peer.seq or (seq == peer.seq and kind == "presence.delta")

    def _apply_delta(self, worker: str, message: dict[str, Any]) -> None:
        for room, (here, gone) in message["rooms"].items():
            for user in gone:
                self.index.set_present(worker, room, user, False)
            for user in here:
                self.index.set_present(worker, room, user, True)
        for user, count in message["sockets"].items():
            self.index.set_sockets(worker, user, int(count))

    async def _ask(self, peer: Peer, message: dict[str, Any]) -> None:
        """Ask the worker of ``message`` for its snapshot, again after half an interval without one."""
        now = time.monotonic()
        if "channel" not in message or now - peer.asked_at < self.interval / 2:
            return
        peer.asked_at = now
        with contextlib.suppress(Exception):  # the next heartbeat snapshot heals it as well
            await self.layer.send(message["channel"], self._sync_request())

    # ------------------------------------------------------------------ telling watchers

    def _flipped(self, room: str, user: str) -> None:
        """``user`` became or stopped being a member of ``room``: its watchers here hear of it."""
        if room not in self.watchers:
            return  # a watcher that starts later reads the members after it started
        if room not in self._unnotified:
            self._unnotified[room] = set()
            self._due[room] = time.monotonic() + self._window(room)
        self._unnotified[room].add(user)
        if self._notifier is None:
            self._notifier = asyncio.create_task(self._tell_watchers())

    def _window(self, room: str) -> float:
        """How long a room's changes gather before its watchers here hear of them."""
        watchers = len(self.watchers.get(room, ()))
        return min(self.interval, self.notify_delay * max(1.0, watchers / WATCHERS_PER_WINDOW))

    async def _tell_watchers(self) -> None:
        try:
            while self._unnotified:
                await asyncio.sleep(self.notify_delay)
                now = time.monotonic()
                for room in [room for room, due in self._due.items() if due <= now]:
                    users = self._unnotified.pop(room)
                    del self._due[room]
                    if room not in self.watchers:
                        continue
                    members = self.index.members(room)
                    joined = sorted(user for user in users if user in members)[:NAMES_PER_CHANGE]
                    left = sorted(user for user in users if user not in members)[:NAMES_PER_CHANGE]
                    await self._tell(PresenceChange(room, tuple(joined), tuple(left), len(members)))
        finally:
            self._notifier = None

    async def _tell(self, change: PresenceChange) -> None:
        for watcher in list(self.watchers.get(change.room, ())):
            try:
                await watcher(change)
            except Exception:
                logger.exception("presence watcher failed")
