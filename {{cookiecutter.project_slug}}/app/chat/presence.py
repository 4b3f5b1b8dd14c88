"""Who is in which room, across every worker and host, kept with the channel layer alone.

Each worker counts its own connections per room and tells the group ``presence`` whenever a
room changes, plus a full snapshot every ``interval`` seconds. Every worker merges what it
hears into a view of all workers; a worker that stops sending (it died) drops out after three
intervals. A new worker asks the others for their snapshots when it starts.

Watchers of a room hear of its changes at most once per ``notify_delay``, as one change made once
for all of them: a room that 1,000 people join at once costs 1,000 frames, not a million. A watcher
may have started (and seen the members) at any moment of that window, so a change names as left
everyone who was there at any moment of it and is gone, and as joined everyone who was not there
at some moment of it and is there now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..channels import BaseChannelLayer, ChannelLayerError
from ..channels.broker import Backoff
from ..channels.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

GROUP = "presence"


@dataclass(frozen=True, eq=False)  # hashed by identity: one change, encoded once for all its watchers
class PresenceChange:
    room: str
    joined: tuple[str, ...]
    left: tuple[str, ...]
    members: tuple[str, ...]


Watcher = Callable[[PresenceChange], Awaitable[None]]


class Presence:
    def __init__(self, layer: BaseChannelLayer, worker_id: str, interval: float = 5.0,
                 notify_delay: float = 0.1) -> None:
        self.layer = layer
        self.worker_id = worker_id
        self.interval = interval
        self.notify_delay = notify_delay
        self.local: dict[str, Counter[str]] = {}
        self.remote: dict[str, tuple[float, dict[str, list[str]]]] = {}
        self.local_sockets: Counter[str] = Counter()  # user -> open sockets here
        self.remote_sockets: dict[str, dict[str, int]] = {}  # worker -> user -> open sockets there
        self.watchers: dict[str, set[Watcher]] = {}
        self.channel = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._unnotified: dict[str, tuple[set[str], set[str]]] = {}  # room -> members (at any, at every) moment
        self._notifier: asyncio.Task[None] | None = None

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
        await self.layer.group_send(GROUP, {"type": "presence.sync", "worker": self.worker_id,
                                            "reply_to": self.channel})

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
        await cancel_and_wait([*self._tasks, self._notifier])
        if self.local and not self.layer.closed:
            self.local.clear()
            with contextlib.suppress(Exception):
                await self._broadcast_snapshot()
        with contextlib.suppress(Exception):
            await self.layer.group_discard(GROUP, self.channel)

    # ------------------------------------------------------------------ queries

    def members(self, room: str) -> set[str]:
        users = {user for user, count in self.local.get(room, Counter()).items() if count > 0}
        now = time.monotonic()
        for expires_at, rooms in self.remote.values():
            if expires_at >= now:
                users.update(rooms.get(room, ()))
        return users

    def rooms_of(self, user: str) -> set[str]:
        """The rooms ``user`` is in on any socket, on any worker."""
        rooms = {room for room, counts in self.local.items() if counts.get(user)}
        now = time.monotonic()
        for expires_at, remote_rooms in self.remote.values():
            if expires_at >= now:
                rooms.update(room for room, users in remote_rooms.items() if user in users)
        return rooms

    def sockets(self, user: str) -> int:
        """Open sockets of ``user`` on every worker (another worker's count is as fresh as its last message)."""
        now = time.monotonic()
        remote = sum(counts.get(user, 0) for worker, counts in self.remote_sockets.items()
                     if self.remote.get(worker, (0.0, {}))[0] >= now)
        return self.local_sockets[user] + remote

    async def connected(self, user: str, delta: int) -> None:
        """A socket of ``user`` opened (+1) or closed (-1) here; the other workers hear of it at once."""
        self.local_sockets[user] += delta
        count = self.local_sockets[user]
        if count <= 0:
            del self.local_sockets[user]
        with contextlib.suppress(Exception):  # the heartbeat repeats it if the broker is briefly down
            await self.layer.group_send(GROUP, {"type": "presence.sockets", "worker": self.worker_id,
                                                "user": user, "count": max(count, 0)})

    def rooms(self) -> dict[str, int]:
        names = set(self.local)
        for _, rooms in self.remote.values():
            names.update(rooms)
        counts = {name: len(self.members(name)) for name in names}
        return {name: count for name, count in sorted(counts.items()) if count}

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
        await self._change_local(room, user, +1)

    async def leave(self, room: str, user: str) -> None:
        await self._change_local(room, user, -1)

    async def _change_local(self, room: str, user: str, delta: int) -> None:
        before = self.members(room)
        counts = self.local.setdefault(room, Counter())
        counts[user] += delta
        if counts[user] <= 0:
            del counts[user]
        if not counts:
            del self.local[room]
        self._notify(room, before)
        users = sorted(self.local.get(room, ()))
        with contextlib.suppress(Exception):  # the heartbeat repeats it if the broker is briefly down
            await self.layer.group_send(
                GROUP, {"type": "presence.room", "worker": self.worker_id, "room": room, "users": users}
            )

    # ------------------------------------------------------------------ the view of other workers

    def _snapshot(self) -> dict[str, list[str]]:
        return {room: sorted(counts) for room, counts in self.local.items()}

    async def _broadcast_snapshot(self) -> None:
        snapshot = {"type": "presence.snapshot", "worker": self.worker_id, "rooms": self._snapshot(),
                    "sockets": dict(self.local_sockets)}
        await self.layer.group_send(GROUP, snapshot)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self._expire()
            try:
                await self._broadcast_snapshot()
            except Exception as exc:
                logger.warning("presence heartbeat failed: %s", exc)

    async def _expire(self) -> None:
        now = time.monotonic()
        for worker, (expires_at, rooms) in list(self.remote.items()):
            if expires_at < now:
                befores = {room: self.members(room) | set(users) for room, users in rooms.items()}
                del self.remote[worker]
                self.remote_sockets.pop(worker, None)
                logger.info("presence: worker %s went silent; dropping its %d rooms", worker, len(rooms))
                for room, before in befores.items():
                    self._notify(room, before)

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
            await self.layer.send(message["reply_to"], {"type": "presence.snapshot", "worker": self.worker_id,
                                                        "rooms": self._snapshot(), "sockets": dict(self.local_sockets)})
            return
        _, rooms = self.remote.get(worker, (0.0, {}))
        if kind == "presence.sockets":
            self.remote_sockets.setdefault(worker, {})[message["user"]] = int(message["count"])
            self.remote[worker] = (time.monotonic() + 3 * self.interval, rooms)
            return
        if kind == "presence.snapshot":
            self.remote_sockets[worker] = {str(u): int(n) for u, n in message.get("sockets", {}).items()}
        if kind == "presence.snapshot":
            new_rooms: dict[str, list[str]] = message["rooms"]
        else:
            new_rooms = {**rooms, message["room"]: message["users"]}
            if not message["users"]:
                del new_rooms[message["room"]]
        befores = {room: self.members(room) for room in set(rooms) | set(new_rooms)}
        self.remote[worker] = (time.monotonic() + 3 * self.interval, new_rooms)
        for room, before in befores.items():
            self._notify(room, before)

    # ------------------------------------------------------------------ telling watchers

    def _notify(self, room: str, before: set[str]) -> None:
        """``room`` may have changed from ``before``; its watchers hear of it within ``notify_delay``."""
        ever, always = self._unnotified.get(room, (before, before))
        self._unnotified[room] = (ever | before, always & before)
        if self._notifier is None:
            self._notifier = asyncio.create_task(self._tell_watchers())

    async def _tell_watchers(self) -> None:
        try:
            while self._unnotified:
                await asyncio.sleep(self.notify_delay)
                unnotified, self._unnotified = self._unnotified, {}
                for room, (ever, always) in unnotified.items():
                    after = self.members(room)
                    joined, left = after - always, ever - after
                    if joined or left:
                        await self._tell(PresenceChange(room, tuple(sorted(joined)), tuple(sorted(left)),
                                                        tuple(sorted(after))))
        finally:
            self._notifier = None

    async def _tell(self, change: PresenceChange) -> None:
        for watcher in list(self.watchers.get(change.room, ())):
            try:
                await watcher(change)
            except Exception:
                logger.exception("presence watcher failed")
