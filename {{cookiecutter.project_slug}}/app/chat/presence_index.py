"""Every worker's presence merged into indexes that answer in time of the answer, not of the rooms' sizes.

Each worker (this one too) contributes a ``View``: the users it has in each room and their open
sockets there. The index changes only through the methods below, which keep, per room, a count of
the workers that have each user there (a user is a member while any worker has them), the room's
members sorted (so a list of the first N is a slice), per user their rooms, and per user the open
sockets over all views. ``flipped(room, user)`` hears each time a user becomes or stops being a
member, which is what watchers are told of.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field

EMPTY: frozenset[str] = frozenset()


@dataclass
class View:
    """One worker's contribution."""

    rooms: dict[str, set[str]] = field(default_factory=dict)
    sockets: dict[str, int] = field(default_factory=dict)


class PresenceIndex:
    def __init__(self, flipped: Callable[[str, str], None]) -> None:
        self.flipped = flipped
        self.views: dict[str, View] = {}
        self._workers: dict[str, Counter[str]] = {}  # room -> user -> workers that have the user there
        self._sorted: dict[str, list[str]] = {}  # room -> its members, sorted
        self._rooms_of: dict[str, set[str]] = {}  # user -> rooms they are a member of
        self._sockets: Counter[str] = Counter()  # user -> open sockets over every view

    # ------------------------------------------------------------------ queries

    def members(self, room: str) -> Set[str]:
        """A live read-only view (``in`` and ``len`` in O(1)): copy it to keep it across an await."""
        counts = self._workers.get(room)
        return counts.keys() if counts is not None else EMPTY

    def count(self, room: str) -> int:
        return len(self._workers.get(room, ()))

    def first(self, room: str, limit: int | None) -> list[str]:
        """The room's members in sorted order, the first ``limit`` of them (all: ``None``)."""
        names = self._sorted.get(room)
        if names is None:
            return []
        return names[:limit] if limit is not None else list(names)

    def rooms_of(self, user: str) -> frozenset[str]:
        return frozenset(self._rooms_of.get(user, EMPTY))

    def sockets(self, user: str) -> int:
        return self._sockets.get(user, 0)

    def rooms(self) -> dict[str, int]:
        """Every room with a member, by name, with its member count."""
        return {room: len(self._workers[room]) for room in sorted(self._workers)}

    # ------------------------------------------------------------------ changes of one worker's view

    def set_present(self, worker: str, room: str, user: str, present: bool) -> None:
        """``worker`` has (or no longer has) ``user`` in ``room``; a repeat changes nothing."""
        view = self.views.setdefault(worker, View())
        users = view.rooms.get(room)
        if present:
            if users is None:
                users = view.rooms[room] = set()
            elif user in users:
                return
            users.add(user)
            self._add(room, user)
        elif users is not None and user in users:
            users.discard(user)
            if not users:
                del view.rooms[room]
            self._remove(room, user)

    def set_room(self, worker: str, room: str, users: Iterable[str]) -> None:
        """``worker`` has exactly ``users`` in ``room``."""
        now = set(users)
        before = self.views.setdefault(worker, View()).rooms.get(room, set())
        for user in before - now:
            self.set_present(worker, room, user, False)
        for user in now - before:
            self.set_present(worker, room, user, True)

    def set_sockets(self, worker: str, user: str, count: int) -> None:
        """``worker`` has ``count`` open sockets of ``user``."""
        view = self.views.setdefault(worker, View())
        count = max(count, 0)
        delta = count - view.sockets.get(user, 0)
        if not delta:
            return
        if count:
            view.sockets[user] = count
        else:
            del view.sockets[user]
        self._sockets[user] += delta
        if self._sockets[user] <= 0:
            del self._sockets[user]

    def replace(self, worker: str, rooms: Mapping[str, Iterable[str]], sockets: Mapping[str, int]) -> None:
        """``worker``'s whole view (a snapshot): only what differs from the one held changes the index."""
        view = self.views.setdefault(worker, View())
        for room in set(view.rooms) - set(rooms):
            self.set_room(worker, room, ())
        for room, users in rooms.items():
            self.set_room(worker, room, users)
        for user in set(view.sockets) - set(sockets):
            self.set_sockets(worker, user, 0)
        for user, count in sockets.items():
            self.set_sockets(worker, user, int(count))

    def drop(self, worker: str) -> View | None:
        """``worker`` is gone: its contribution leaves the index."""
        view = self.views.get(worker)
        if view is None:
            return None
        self.replace(worker, {}, {})
        return self.views.pop(worker)

    # ------------------------------------------------------------------ the merged indexes

    def _add(self, room: str, user: str) -> None:
        counts = self._workers.get(room)
        if counts is None:
            counts = self._workers[room] = Counter()
        counts[user] += 1
        if counts[user] == 1:
            insort(self._sorted.setdefault(room, []), user)
            self._rooms_of.setdefault(user, set()).add(room)
            self.flipped(room, user)

    def _remove(self, room: str, user: str) -> None:
        counts = self._workers[room]
        counts[user] -= 1
        if counts[user] > 0:
            return
        del counts[user]
        names = self._sorted[room]
        del names[bisect_left(names, user)]
        if not counts:
            del self._workers[room], self._sorted[room]
        rooms = self._rooms_of[user]
        rooms.discard(room)
        if not rooms:
            del self._rooms_of[user]
        self.flipped(room, user)
