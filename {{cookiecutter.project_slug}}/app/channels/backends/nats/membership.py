"""Group membership mirrored from two KV buckets into memory.

Bucket ``<group_bucket>``: key ``<group>.<process>`` per member process, TTL = the lease (three
refresh intervals). Bucket ``<group_bucket>_channels``: key ``<group>.<channel>`` per named (or
foreign) channel, TTL = ``group_expiry``. One key per writer, so concurrent adds never contend.
Every process WATCHES both buckets (an ephemeral pull consumer) and keeps the current view in
memory, so ``group_send`` reads members without a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ...exceptions import BrokerUnavailable
from ...tasks import cancel_and_wait
from .connection import NATSConnection
from .publish import Publisher
from .pull import pull_forever
from .streams import Restart, Streams
from .subjects import token, untoken

if TYPE_CHECKING:
    from nats.aio.msg import Msg

logger = logging.getLogger("app.channels.nats")
Supervise = Callable[[str, Callable[[], Awaitable[None]]], "asyncio.Task[None]"]


class View:
    """One KV bucket as this process last saw it: group -> member -> (revision, deadline)."""

    def __init__(self, bucket: str, ttl: float) -> None:
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self.ttl = ttl
        self.members: dict[str, dict[str, tuple[int, float]]] = {}
        self.tombstones: dict[tuple[str, str], int] = {}
        self.last_seq = 0
        self.created: str | None = None
        self.caught_up = asyncio.Event()
        self.changed = asyncio.Condition()

    def reset(self, created: str | None = None) -> None:
        self.members.clear()
        self.tombstones.clear()
        self.last_seq = 0
        self.created = created
        self.caught_up.clear()

    def apply(self, group: str, member: str, revision: int, deadline: float | None) -> None:
        """Apply a put (``deadline``) or delete (``None``) unless a newer revision is known."""
        members = self.members.get(group)
        current = members.get(member) if members else None
        if (current is not None and current[0] >= revision) or self.tombstones.get((group, member), 0) >= revision:
            return
        if deadline is None:
            if members is not None:
                members.pop(member, None)
                if not members:
                    del self.members[group]
            self.tombstones[(group, member)] = revision
        else:
            self.members.setdefault(group, {})[member] = (revision, deadline)
            self.tombstones.pop((group, member), None)

    def alive(self, group: str) -> list[str]:
        members = self.members.get(group)
        if not members:
            return []
        now = time.time()
        for member in [m for m, (_, deadline) in members.items() if deadline < now]:
            del members[member]
        if not members:
            del self.members[group]
        return list(members)

    def prune_tombstones(self) -> None:
        """A tombstone older than everything the watcher passed can no longer shadow anything."""
        if len(self.tombstones) > 1000:
            self.tombstones = {k: rev for k, rev in self.tombstones.items() if rev > self.last_seq}


class Membership:
    """The two views (``procs``, ``chans``), their watchers, and writes to the buckets."""

    def __init__(self, conn: NATSConnection, streams: Streams, publisher: Publisher, procs: View, chans: View,
                 supervise: Supervise, is_closed: Callable[[], bool]) -> None:
        self.conn = conn
        self.streams = streams
        self.publisher = publisher
        self.procs = procs
        self.chans = chans
        self._supervise = supervise
        self._is_closed = is_closed
        self._watchers: list[asyncio.Task[None]] = []

    @property
    def views(self) -> tuple[View, View]:
        return self.procs, self.chans

    async def ready(self) -> None:
        """Wait (bounded) until both watchers have read their bucket once."""
        await self.streams.ensure()
        if not self._watchers:
            self._watchers = [self._supervise(f"watch {view.bucket}", functools.partial(self._watch, view))
                              for view in self.views]
        if self.procs.caught_up.is_set() and self.chans.caught_up.is_set():
            return
        try:
            await asyncio.wait_for(asyncio.gather(self.procs.caught_up.wait(), self.chans.caught_up.wait()),
                                   self.conn.timeout)
        except TimeoutError:
            raise BrokerUnavailable(f"could not read the group buckets within {self.conn.timeout}s") from None

    async def put(self, view: View, group: str, member: str, *, delete: bool = False, wait: bool = True,
                  create: bool = True) -> None:
        """Put or delete one membership key, apply it to our view, then (bounded) wait for the
        watcher to pass it, so this view includes every change made before ours."""
        subject = f"$KV.{view.bucket}.{token(group)}.{token(member)}"
        seq = await self.publisher.publish(subject, b"", {"KV-Operation": "DEL"} if delete else None, create=create)
        view.apply(group, member, seq, None if delete else time.time() + view.ttl)
        if wait:
            with contextlib.suppress(TimeoutError):
                async with view.changed:
                    await asyncio.wait_for(view.changed.wait_for(lambda: view.last_seq >= seq), 2.0)

    async def _watch(self, view: View) -> None:
        """Follow one bucket forever: last value per key first, then every change."""
        api = self.conn.lib.api
        while not self._is_closed():
            generation = self.streams.generation
            created = await self.streams.exists(view.stream)
            if created is None:
                view.caught_up.clear()
                await asyncio.sleep(0.5)
                continue
            if created != view.created:
                view.reset(created)
            config = api.ConsumerConfig(
                ack_policy=api.AckPolicy.NONE, filter_subject=f"$KV.{view.bucket}.>", inactive_threshold=30.0,
                mem_storage=True, num_replicas=1,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT if view.last_seq == 0 else
                api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=view.last_seq + 1 if view.last_seq else None,
            )
            js = await self.conn.connect()
            info = await js.add_consumer(view.stream, config)
            if info.num_pending == 0:
                view.caught_up.set()
            handle = functools.partial(self._apply, view, generation, len(f"$KV.{view.bucket}."))
            try:
                await pull_forever(self.conn, self.streams, view.stream, info.name, handle, batch=1024)
            except Restart as exc:
                logger.debug("restarting the watch of %s: %s", view.bucket, exc)
                await asyncio.sleep(0.05)
            finally:
                if self.conn.nc is not None and self.conn.nc.is_connected:
                    with contextlib.suppress(BaseException):
                        await asyncio.wait_for(self.conn.delete_consumer(view.stream, info.name), 1.0)

    async def _apply(self, view: View, generation: int, prefix: int, msg: Msg) -> None:
        self.streams.check(generation)
        meta = msg.metadata
        seq = meta.sequence.stream
        group_token, _, member_token = msg.subject[prefix:].partition(".")
        operation = msg.headers.get("KV-Operation") if msg.headers else None
        deadline = None
        if operation is None:
            now, stamp = time.time(), meta.timestamp.timestamp()
            deadline = stamp + view.ttl if 0 <= now - stamp <= view.ttl else now + view.ttl
        view.apply(untoken(group_token), untoken(member_token), seq, deadline)
        view.last_seq = max(view.last_seq, seq)
        view.prune_tombstones()
        if meta.num_pending == 0:
            view.caught_up.set()
        async with view.changed:
            view.changed.notify_all()

    async def stop(self) -> None:
        await cancel_and_wait(self._watchers)
        self._watchers = []

    def reset(self) -> None:
        for view in self.views:
            view.reset()
