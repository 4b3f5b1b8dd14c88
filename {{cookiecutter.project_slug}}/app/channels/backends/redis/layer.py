"""The Redis layer: lists for delivery, sorted sets for groups, Lua for one round trip per operation.

Keys (every key hash-tagged, so each one lives in exactly one Cluster slot)::

    {P:i:<process>}     list   the inbox of one layer instance (process)
    {P:c:<channel>}     list   a named channel
    {P:g:<group>}p      zset   member processes, score = lease expiry (ms)
    {P:g:<group>}c      zset   named / other-process channels, score = group_expiry (ms)

``send`` is one ``EVALSHA`` (capacity check, ``RPUSH``, ``PEXPIRE``; see ``scripts.py``).
Concurrent ``send`` and ``group_send`` calls of one layer are auto-pipelined: the scripts called
while a pipeline is in flight go together in the next one, so 50 concurrent sends cost Redis and
the client one batch rather than 50 round trips, and each caller still waits for its own reply.

``group_send`` on one server (``url``, Sentinel, or a single ``hosts`` entry) is one ``EVALSHA``:
the script prunes expired leases, then pushes the group entry once to every member process's
inbox and the message to every named member. The sender's own members get the message at once,
in-process (as with a local ``send``), and its inbox is skipped.

Sharded deployments (Redis Cluster, or several ``hosts`` sharded by consistent hashing like
channels_redis) cannot do that: the inboxes live in other slots or servers. There ``group_send``
takes two steps: one ``EVALSHA`` on the group's slot prunes and returns the members, then one
pipeline per server (sent concurrently) runs the single-key push script for each member key.
That is two round trips of latency, independent of the number of members, and delivery stays
list-based: a process that reconnects finds its inbox intact, which Pub/Sub cannot promise.
(A ``SPUBLISH`` per group would be one round trip, but a sharded-Pub/Sub subscriber that is
reconnecting misses messages, and capacity and expiry would no longer be enforced by Redis.)

``use_pubsub`` / ``sharded_pubsub`` (and their ``FASTAPI_WEBSOCKETS_REDIS_*`` variables) are
accepted for compatibility with the seed's CONFIG and have no effect: the inbox is read with a
blocking pop (``BLMPOP``, batches of up to 512 entries) on one dedicated connection, so there is
nothing for a Pub/Sub notification to wake up.

Connections per layer: the pool (``max_connections``, default 50, also bounding concurrent
commands) plus one for the inbox, per server, whatever the number of channels and groups.
Named-channel receives block for at most ``receive_timeout`` seconds on a pool connection, and
hold at most half of the pool. There are no client-side retries (a retried push whose reply was
lost would be delivered twice): while Redis is down, operations raise ``BrokerUnavailable``; the
inbox reader and named receives reconnect on their own and the inbox reader re-registers this
process's groups, so a restarted (even emptied) Redis needs no application restart.

Extra CONFIG keys: ``max_connections`` (50), ``socket_timeout`` (10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgpack

from ...base import BaseChannelLayer
from ...batching import AutoBatch
from ...broker import BrokerEnv, broker_errors, require_positive
from ...exceptions import BrokerUnavailable, ChannelFull
from ...names import is_process_local, process_of
from ...tasks import cancel_and_wait
from .connections import RedisConnections, tag
from .scripts import GROUP_SEND, MEMBERS, SEND, STAMP, Call, merge_sends, run_script, run_scripts, split_results

if TYPE_CHECKING:
    from .connections import Client

logger = logging.getLogger("app.channels")
_T = TypeVar("_T")
INBOX_BATCH = 512
PIPELINE_BATCH = 512
#: A batch of group-membership changes: ("zadd" | "zrem", [(key, member, score, ttl), ...]).
Membership = tuple[str, list[tuple[str, str, int, int]]]
CLOSE_TIMEOUT = 5.0


class RedisEnv(BrokerEnv):
    """``FASTAPI_WEBSOCKETS_REDIS_*`` (``USE_PUBSUB`` / ``SHARDED_PUBSUB``: accepted, no effect)."""

    url: str | None = None
    cluster: bool | None = None
    use_pubsub: bool | None = None
    sharded_pubsub: bool | None = None


def _raise_if_cancelled() -> None:
    """End a receive's read whose cancel a library swallowed, before its pop starts.

    Python 3.11's ``asyncio.wait_for`` (redis-py sends with it when ``socket_timeout`` is set, as
    while a Cluster loads its slot map in ``_op()``) returns the result of an inner send that finished
    as the cancel landed, dropping the cancel. The receive that wanted this read has left: a pop
    started now would take a message for a buffer nobody reads (issue seen: the first message of a
    named channel lost on Redis Cluster).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RedisChannelLayer(BaseChannelLayer):
    """Channels on Redis: standalone (``url``), sharded (``hosts``), Sentinel or Cluster."""

    named_reads_cancel_safe = True  # a cancelled pop puts what it took back at the head (_settle waits)
    env_model = RedisEnv
    inbox_backpressure = True

    def __init__(
        self,
        *,
        url: str | None = None,
        hosts: Sequence[Any] | None = None,
        cluster: bool = False,
        sentinels: Sequence[Any] | None = None,
        master_name: str | None = None,
        sentinel_kwargs: dict[str, Any] | None = None,
        use_pubsub: bool = True,
        sharded_pubsub: bool = True,
        max_connections: int = 50,
        socket_timeout: float = 10.0,
        **config: Any,
    ) -> None:
        super().__init__(**config)
        del use_pubsub, sharded_pubsub  # the seed's keys, accepted without effect (module docstring)
        require_positive(max_connections=max_connections, socket_timeout=socket_timeout)
        self._kp = "{" + self.prefix + ":"
        self._inbox_key = self._inbox_of(self.process_id)
        self._ttl_ms = int(self.expiry * 1000) + 1000
        #: Every connection of this layer carries this name (``CLIENT LIST``).
        self.client_name = f"{self.prefix}:{self.process_id}"
        self._redis = RedisConnections(
            url=url, hosts=hosts, cluster=cluster, sentinels=sentinels, master_name=master_name,
            sentinel_kwargs=sentinel_kwargs, max_connections=max_connections, socket_timeout=socket_timeout,
            client_name=self.client_name, inbox_tag=tag(self._inbox_key),
        )
        self._where = self._redis.where
        self._limit = asyncio.Semaphore(max_connections)
        # Blocked named-channel pops may hold at most half the pool: sends always find a connection.
        self._receive_slots = asyncio.Semaphore(max(1, max_connections // 2))
        self._abandoned: set[asyncio.Task[Any]] = set()  # inbox pops whose reader was cancelled
        self._leftovers: set[asyncio.Future[Any]] = set()  # named pops (and give-backs) whose receive left
        self._pipeline: AutoBatch[Call] = AutoBatch(
            self._pipelined, PIPELINE_BATCH, "Redis auto-pipeline",
            size=lambda call: sum(len(arg) for arg in call[2] if isinstance(arg, bytes)),
        )
        # Group joins and leaves made together (a reconnect storm: each socket joins its user's and its
        # session's group) go to Redis as one pipeline, not a round trip each.
        self._memberships: AutoBatch[Membership] = AutoBatch(self._apply_memberships, PIPELINE_BATCH,
                                                             "Redis group memberships")

    # ------------------------------------------------------------------ commands

    @contextlib.asynccontextmanager
    async def _op(self) -> AsyncIterator[None]:
        """Bound concurrent commands and name the broker when it cannot be reached."""
        async with self._limit:
            try:
                with broker_errors(self._where, *self._redis.errors):
                    await self._redis.ready()
                    yield
            except BrokerUnavailable:
                await self._redis.drop_idle()
                raise

    async def _pipelined(self, calls: list[Call]) -> list[Any]:
        merged, spans = merge_sends(calls)
        async with self._op():
            results = await run_scripts(self._redis.for_key, merged, raise_errors=False)
        return split_results(results, spans)

    async def _abandon_on_cancel(self, call: Awaitable[_T]) -> _T:
        """Await an inbox pop so that cancelling the reader (only ``close()`` does) returns at once.

        redis-py's RedisCluster can absorb a cancellation that lands in a blocked read (seen with
        redis-py 8.1: the task stays in the read). The pop goes on in its own task until the
        client is closed; ``close()`` waits for those tasks after closing the connections.
        """
        task = asyncio.ensure_future(call)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._forget_abandoned)
            raise

    def _forget_abandoned(self, task: asyncio.Task[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a pop that failed after its caller left is no news

    # ------------------------------------------------------------------ keys and entries

    def _named_key(self, channel: str) -> str:
        return f"{self._kp}c:{channel}}}"

    def _inbox_of(self, process: str) -> str:
        return f"{self._kp}i:{process}}}"

    def _group_keys(self, group: str) -> list[str]:
        return [f"{self._kp}g:{group}}}p", f"{self._kp}g:{group}}}c"]

    def _stamp(self) -> bytes:
        return b"%013d" % int((time.time() + self.expiry) * 1000)

    def _target(self, channel: str, data: bytes) -> tuple[str, bytes, int]:
        """Key, payload and capacity for a message to ``channel``."""
        if is_process_local(channel):
            return self._inbox_of(process_of(channel)), self._channel_entry(channel, data), self.inbox_capacity
        return self._named_key(channel), data, self.capacity

    # ------------------------------------------------------------------ broker primitives

    async def _send(self, channel: str, data: bytes) -> None:
        key, payload, capacity = self._target(channel, data)
        now = int(time.time() * 1000)
        pushed = await self._pipeline.call((SEND, [key], [self._stamp() + payload, capacity, self._ttl_ms, now]))
        if not pushed:
            raise ChannelFull(f"channel {channel!r} is full ({capacity} messages)")

    async def _settle(self) -> None:
        while self._leftovers:  # a pop that ends schedules its give-back: wait for that too
            await asyncio.wait(set(self._leftovers))

    async def _receive(self, channel: str) -> bytes | None:
        """A blocking pop, never cancelled once sent: a receive that leaves before it ends lets it
        run out (at most ``receive_timeout``) and gives what it took back to the list's head, so
        this process holds a named channel's messages only while a receive waits for them."""
        key = self._named_key(channel)
        async with self._receive_slots, self._op():
            _raise_if_cancelled()
            pop = asyncio.ensure_future(self._redis.for_key(key).blpop([key], timeout=self.receive_timeout))
            try:
                result = await asyncio.shield(pop)
            except asyncio.CancelledError:
                self._give_back_later(key, pop)
                raise
        if result is None:
            return None
        entry = cast(bytes, result[1])  # decode_responses is off: replies are bytes
        return entry[STAMP:]

    def _give_back_later(self, key: str, pop: asyncio.Future[Any]) -> None:
        self._leftovers.add(pop)

        def done(task: asyncio.Future[Any]) -> None:
            self._leftovers.discard(task)
            if task.cancelled() or task.exception() is not None or task.result() is None:
                return
            back = asyncio.ensure_future(self._give_back(key, cast(bytes, task.result()[1])))
            self._leftovers.add(back)
            back.add_done_callback(self._leftovers.discard)

        pop.add_done_callback(done)

    async def _give_back(self, key: str, entry: bytes) -> None:
        """Put an entry a departed receive popped back at the head of its list (stamp included)."""
        try:
            with broker_errors(self._where, *self._redis.errors):
                pipe = self._redis.for_key(key).pipeline(transaction=False)
                pipe.lpush(key, entry)
                pipe.pexpire(key, self._ttl_ms)
                await pipe.execute()
        except BrokerUnavailable as exc:
            logger.warning("a message of %s could not be put back after its receive left: %s", key, exc)
            self.dropped += 1

    async def _consume_inbox(self, deliver: Callable[[bytes], None]) -> None:
        if self._local_groups:  # after a broker restart the memberships are gone: renew them now
            await self._group_refresh(list(self._local_groups))
        with broker_errors(self._where, *self._redis.errors):
            await self._read_inbox(deliver)

    async def _read_inbox(self, deliver: Callable[[bytes], None]) -> None:
        from redis.exceptions import ResponseError

        client, key, block = self._redis.inbox, self._inbox_key, self.receive_timeout * 2
        multi = True
        while True:
            entries: list[bytes] = []
            if multi:
                try:
                    result = await self._abandon_on_cancel(
                        client.blmpop(block, 1, key, direction="LEFT", count=INBOX_BATCH)  # type: ignore[arg-type]
                    )
                except ResponseError as exc:  # Redis < 7: no BLMPOP
                    if "unknown command" not in str(exc).lower():
                        raise
                    multi = False
                    continue
                if result:
                    entries = cast("list[bytes]", result[1])
            else:
                popped = await self._abandon_on_cancel(client.blpop([key], timeout=block))
                if popped:
                    entries = [cast(bytes, popped[1])]
            for entry in entries:
                deliver(entry[STAMP:])
            await self._relieve()

    def _lease_ms(self) -> int:
        return int((time.time() + 3 * self.refresh_interval) * 1000)

    async def _zadd(self, items: list[tuple[str, str, int, int]]) -> None:
        """``ZADD key score member`` + ``PEXPIRE key ttl`` for each item."""
        await self._memberships.call(("zadd", items))

    async def _zrem(self, key: str, member: str) -> None:
        await self._memberships.call(("zrem", [(key, member, 0, 0)]))

    async def _apply_memberships(self, calls: list[Membership]) -> list[None]:
        """Every queued ZADD/PEXPIRE and ZREM, in order, one pipeline per server."""
        by_client: dict[int, tuple[Client, list[tuple[str, tuple[str, str, int, int]]]]] = {}
        for kind, items in calls:
            for item in items:
                client = self._redis.for_key(item[0])
                by_client.setdefault(id(client), (client, []))[1].append((kind, item))

        async def run(client: Client, batch: list[tuple[str, tuple[str, str, int, int]]]) -> None:
            pipe = client.pipeline(transaction=False)
            for kind, (key, member, score, ttl) in batch:
                if kind == "zrem":
                    pipe.zrem(key, member)
                else:
                    pipe.zadd(key, {member: score})
                    pipe.pexpire(key, ttl)
            await pipe.execute()

        async with self._op():
            await asyncio.gather(*(run(client, batch) for client, batch in by_client.values()))
        return [None] * len(calls)

    async def _group_join(self, group: str) -> None:
        await self._group_refresh([group])

    async def _group_refresh(self, groups: list[str]) -> None:
        lease = self._lease_ms()
        ttl = int(3 * self.refresh_interval * 1000) + 1000
        await self._zadd([(self._group_keys(g)[0], self.process_id, lease, ttl) for g in groups])

    async def _group_leave(self, group: str) -> None:
        await self._zrem(self._group_keys(group)[0], self.process_id)

    async def _group_add_channel(self, group: str, channel: str) -> None:
        expires = int((time.time() + self.group_expiry) * 1000)
        await self._zadd([(self._group_keys(group)[1], channel, expires, int(self.group_expiry * 1000) + 1000)])

    async def _group_discard_channel(self, group: str, channel: str) -> None:
        await self._zrem(self._group_keys(group)[1], channel)

    async def _group_send(self, group: str, data: bytes) -> None:
        keys = self._group_keys(group)
        now = int(time.time() * 1000)
        entry = self._group_entry(group, data)
        if not self._redis.sharded:
            args = [self._stamp(), now, entry, data, msgpack.packb(data, use_bin_type=True),
                    self.capacity, self.inbox_capacity, self._ttl_ms, self._kp, self.process_id]
            await self._pipeline.call((GROUP_SEND, keys, args))
            return
        async with self._op():
            processes, channels = await run_script(self._redis.for_key(keys[0]), MEMBERS, keys, [now])
        stamp = self._stamp()
        calls: list[Call] = []
        for process in sorted({p.decode() for p in processes} - {self.process_id}):
            calls.append((SEND, [self._inbox_of(process)], [stamp + entry, self.inbox_capacity, self._ttl_ms, now]))
        for raw in channels:
            key, payload, capacity = self._target(raw.decode(), data)
            calls.append((SEND, [key], [stamp + payload, capacity, self._ttl_ms, now]))
        if calls:
            async with self._op():
                await run_scripts(self._redis.for_key, calls)

    async def _flush(self) -> None:
        pattern = f"{self._kp}*"
        async with self._op():
            for client in self._redis.command_clients():
                keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
                for start in range(0, len(keys), 500):
                    pipe = client.pipeline(transaction=False)
                    for key in keys[start : start + 500]:
                        pipe.execute_command("UNLINK", key)
                    await pipe.execute()

    async def _close(self) -> None:
        """Returns once every connection of this layer is closed (pops left behind included)."""
        self._pipeline.fail_pending(BrokerUnavailable("the channel layer closed before the command was sent"))
        self._memberships.fail_pending(BrokerUnavailable("the channel layer closed before the command was sent"))
        # named pops whose receive left end within receive_timeout; what they took goes back first
        deadline = time.monotonic() + self.receive_timeout + CLOSE_TIMEOUT
        while self._leftovers and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._leftovers), timeout=left)
        await self._redis.close()  # the inbox reader's abandoned pops fail now
        await cancel_and_wait(list(self._abandoned), timeout=CLOSE_TIMEOUT)
        await self._redis.close()  # in case one of them connected again meanwhile
