"""The Redis layer: lists for delivery, sorted sets for groups, Lua for one round trip per operation.

Keys (every key hash-tagged, so each one lives in exactly one Cluster slot)::

    {P:i:<process>}     list   the inbox of one layer instance (process)
    {P:c:<channel>}     list   a named channel
    {P:g:<group>}p      zset   member processes, score = lease expiry (ms)
    {P:g:<group>}c      zset   named / other-process channels, score = group_expiry (ms)

Every list entry starts with its 13-digit expiry in epoch milliseconds, so the Lua push can drop
expired heads before it reports ``ChannelFull``; every push also sets ``PEXPIRE`` so abandoned
lists vanish. ``send`` is one ``EVALSHA`` (capacity check, ``RPUSH``, ``PEXPIRE``). Concurrent
``send`` and ``group_send`` calls of one layer are auto-pipelined: the scripts called while a
pipeline is in flight go together in the next one, so 50 concurrent sends cost Redis and the
client one batch rather than 50 round trips, and each caller still waits for its own reply.

``group_send`` on one server (``url``, Sentinel, or a single ``hosts`` entry) is one ``EVALSHA``:
the script prunes expired leases, then pushes the group entry once to every member process's
inbox and the message to every named member. Scripts build the inbox and channel keys themselves,
which a standalone server allows. The sender's own members get the message at once, in-process
(as with a local ``send``), and its inbox is skipped.

Sharded deployments (Redis Cluster, or several ``hosts`` sharded by consistent hashing like
channels_redis) cannot do that: the inboxes live in other slots or servers. There ``group_send``
takes two steps: one ``EVALSHA`` on the group's slot prunes and returns the members, then one
pipeline per server (sent concurrently) runs the single-key push script for each member key.
That is two round trips of latency, independent of the number of members, and delivery stays
list-based: a process that reconnects finds its inbox intact, which Pub/Sub cannot promise.
(A ``SPUBLISH`` per group would be one round trip, but a sharded-Pub/Sub subscriber that is
reconnecting misses messages, and capacity and expiry would no longer be enforced by Redis.)

``use_pubsub`` / ``sharded_pubsub`` are accepted for compatibility with the seed's CONFIG and have
no effect: the inbox is read with a blocking pop (``BLMPOP``, batches of up to 512 entries) on
one dedicated connection, so there is nothing for a Pub/Sub notification to wake up.

Connections per layer: the pool (``max_connections``, default 50, also bounding concurrent
commands) plus one for the inbox, per server, whatever the number of channels and groups.
Named-channel receives block for at most ``receive_timeout`` seconds on a pool connection, and
hold at most half of the pool. There are no client-side retries (a retried push whose reply was
lost would be delivered twice): while Redis is down, operations raise ``BrokerUnavailable``; the
inbox reader and named receives reconnect on their own and the inbox reader re-registers this
process's groups, so a restarted (even emptied) Redis needs no application restart.

Extra CONFIG keys: ``max_connections`` (50), ``receive_timeout`` (1 s), ``socket_timeout`` (10 s).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import hashlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgpack
from pydantic_settings import BaseSettings

from ..._compat import cluster_needs_initialize
from ...base import BaseChannelLayer
from ...batching import AutoBatch
from ...exceptions import BrokerUnavailable, ChannelFull, ConfigurationError
from ...names import is_process_local, process_of
from .. import import_client

_PUSH_FN = r"""
local function push(key, entry, cap, ttl, now)
  local n = redis.call('LLEN', key)
  while n >= cap do
    local head = redis.call('LINDEX', key, 0)
    if head and (tonumber(string.sub(head, 1, 13)) or 0) >= now then return 0 end
    redis.call('LPOP', key)
    n = n - 1
  end
  redis.call('RPUSH', key, entry)
  redis.call('PEXPIRE', key, ttl)
  return 1
end
"""

# KEYS[1] list; ARGV: entry (stamp + payload), capacity, ttl_ms, now_ms. Returns 1, or 0 when full.
_SEND = _PUSH_FN + r"""
return push(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]))
"""

# KEYS[1] list; ARGV: capacity, ttl_ms, now_ms, then whole entries (stamp included), in order.
# Pushes until the list is full; returns how many it pushed.
_SEND_MANY = _PUSH_FN + r"""
local cap, ttl, now = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
for i = 4, #ARGV do
  if push(KEYS[1], ARGV[i], cap, ttl, now) == 0 then return i - 4 end
end
return #ARGV - 3
"""

# KEYS: procs zset, chans zset. ARGV: now_ms. Prunes expired members; returns {procs, chans}.
_MEMBERS = r"""
local now = ARGV[1]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
return {redis.call('ZRANGE', KEYS[1], 0, -1), redis.call('ZRANGE', KEYS[2], 0, -1)}
"""

# KEYS: procs zset, chans zset. ARGV: stamp, now_ms, group entry, data, msgpack(data),
# capacity, inbox_capacity, ttl_ms, key prefix "{P:", sender's process (served locally, skipped).
# Returns the number of pushes.
# An other-process channel gets msgpack [0, channel, data] (base._channel_entry) built here.
_GROUP_SEND = _PUSH_FN + r"""
local stamp, now, ttl, kp = ARGV[1], tonumber(ARGV[2]), ARGV[8], ARGV[9]
local cap, icap = tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
local sent, entry, named = 0, stamp .. ARGV[3], nil
for _, pid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if pid ~= ARGV[10] then
    sent = sent + push(kp .. 'i:' .. pid .. '}', entry, icap, ttl, now)
  end
end
for _, ch in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local head = string.match(ch, '^([^!]*)!')
  if head then
    local pid = string.match(head, '([^.]*)$')
    local hdr = #ch < 32 and string.char(160 + #ch) or string.char(217, #ch)
    sent = sent + push(kp .. 'i:' .. pid .. '}', stamp .. '\147\0' .. hdr .. ch .. ARGV[5], icap, ttl, now)
  else
    named = named or stamp .. ARGV[4]
    sent = sent + push(kp .. 'c:' .. ch .. '}', named, cap, ttl, now)
  end
end
return sent
"""

_T = TypeVar("_T")
_STAMP = 13  # digits of the expiry stamp in front of every list entry
_INBOX_BATCH = 512
_PIPELINE_BATCH = 512
_MERGE_MAX = 256  # sends to one list in one SEND_MANY at most
_RING_SIZE = 4096


class RedisEnv(BaseSettings):
    """``FASTAPI_WEBSOCKETS_REDIS_*``"""

    url: str | None = None
    prefix: str | None = None
    cluster: bool | None = None
    channel_expiry: float | None = None
    group_expiry: float | None = None
    use_pubsub: bool | None = None
    sharded_pubsub: bool | None = None
    capacity: int | None = None


class _Script:
    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()


SEND, SEND_MANY, MEMBERS, GROUP_SEND = _Script(_SEND), _Script(_SEND_MANY), _Script(_MEMBERS), _Script(_GROUP_SEND)


def _merge_sends(calls: list[_Call]) -> tuple[list[_Call], list[int]]:
    """Adjacent sends to one list become one ``SEND_MANY`` (order kept); returns the calls and
    how many original calls each one stands for."""
    merged: list[_Call] = []
    spans: list[int] = []
    # a run: consecutive SENDs to one key (any other call is a run of its own)
    for _, run in itertools.groupby(calls, key=lambda call: call[1] if call[0] is SEND else id(call)):
        run_calls = list(run)
        for start in range(0, len(run_calls), _MERGE_MAX):
            chunk = run_calls[start : start + _MERGE_MAX]
            if len(chunk) == 1:
                merged.append(chunk[0])
            else:  # SEND args: [entry, capacity, ttl, now]
                _, keys, (_, capacity, ttl, _) = chunk[0]
                now = max(args[3] for _, _, args in chunk)
                merged.append((SEND_MANY, keys, [capacity, ttl, now, *(args[0] for _, _, args in chunk)]))
            spans.append(len(chunk))
    return merged, spans


def _split_results(results: list[Any], spans: list[int]) -> list[Any]:
    """One result per original call: a ``SEND_MANY`` that pushed k of n gives 1 to the first k."""
    split: list[Any] = []
    for result, span in zip(results, spans, strict=True):
        if span == 1:
            split.append(result)
        elif isinstance(result, BaseException):
            split += [result] * span
        else:
            split += [1] * int(result) + [0] * (span - int(result))
    return split


def _redact(entry: Any) -> str:
    """A host for error messages, without its password."""
    if isinstance(entry, dict):
        entry = entry.get("address") or f"{entry.get('host', 'localhost')}:{entry.get('port', 6379)}"
    if isinstance(entry, str):
        parts = urlsplit(entry)
        if parts.password:
            netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            return parts._replace(netloc=netloc).geturl()
    return str(entry)


async def _abandon_on_cancel(call: Awaitable[_T]) -> _T:
    """Await a blocking pop so that cancelling the caller returns at once.

    redis-py's RedisCluster can absorb a cancellation that lands in a blocked read (seen with
    redis-py 8.1: the task stays in the read), and ``close()`` awaits the cancelled readers. The
    pop goes on in its own task until the client is closed; only ``close()`` cancels readers.
    """
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise


def _tag(key: str) -> str:
    return key[key.index("{") + 1 : key.index("}")]


_Call = tuple["_Script", list[str], list[Any]]  # script, keys (one slot), args


class RedisChannelLayer(BaseChannelLayer):
    """Channels on Redis: standalone (``url``), sharded (``hosts``), Sentinel or Cluster."""

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
        receive_timeout: float = 1.0,
        socket_timeout: float = 10.0,
        **config: Any,
    ) -> None:
        super().__init__(**config)
        self._redis = import_client("redis.asyncio", "redis")
        import_client("redis.exceptions", "redis")
        self.use_pubsub = bool(use_pubsub)  # accepted for compatibility, see the module docstring
        self.sharded_pubsub = bool(sharded_pubsub)
        if max_connections < 1 or receive_timeout <= 0:
            raise ConfigurationError("max_connections and receive_timeout must be positive")
        self.receive_timeout = float(receive_timeout)
        self._kp = "{" + self.prefix + ":"
        self._inbox_key = f"{self._kp}i:{self.process_id}}}"
        self._ttl_ms = int(self.expiry * 1000) + 1000
        self._limit = asyncio.Semaphore(max_connections)
        self._pipeline: AutoBatch[_Call] = AutoBatch(
            self._pipelined, _PIPELINE_BATCH, "Redis auto-pipeline",
            size=lambda call: sum(len(arg) for arg in call[2] if isinstance(arg, bytes)),
        )
        # Blocked named-channel pops may hold at most half the pool: sends always find a connection.
        self._receive_slots = asyncio.Semaphore(max(1, max_connections // 2))
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No client-side retries: a retried push whose reply was lost would deliver twice.
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": 5.0, "socket_timeout": socket_timeout,
            "retry": Retry(NoBackoff(), 0), "client_name": f"{self.prefix}:{self.process_id}",
        }
        self._cluster: Any = None
        self._cluster_ready = asyncio.Lock()
        self._clients: list[Any] = []
        self._inbox_client: Any = None
        self._sentinel: Any = None
        modes = sum((bool(hosts), bool(cluster), bool(sentinels)))
        if modes > 1:
            raise ConfigurationError("use only one of hosts, cluster=True and sentinels")
        if cluster:
            from redis.asyncio.cluster import RedisCluster

            address = url or "redis://localhost:6379/0"
            self._cluster = RedisCluster.from_url(address, max_connections=max_connections, **kwargs)
            self._inbox_client = RedisCluster.from_url(address, max_connections=2, **kwargs)
            self._where = f"Redis Cluster at {_redact(address)}"
        elif sentinels:
            from redis.asyncio.sentinel import Sentinel

            if not master_name:
                raise ConfigurationError("sentinels need master_name")
            addresses = [self._address(s) for s in sentinels]
            if url:  # the master's db and credentials; its address comes from the sentinels
                from redis.asyncio.connection import parse_url

                parsed = parse_url(url)
                kwargs.update({k: parsed[k] for k in ("db", "username", "password") if parsed.get(k) is not None})
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
                addresses, sentinel_kwargs=sentinel_kwargs or {}, **kwargs
            )
            self._clients = [self._sentinel.master_for(master_name, max_connections=max_connections)]
            self._inbox_client = self._sentinel.master_for(master_name, max_connections=1)
            self._where = f"Redis master {master_name!r} via sentinels {addresses}"
        else:
            if sentinel_kwargs or master_name:
                raise ConfigurationError("master_name and sentinel_kwargs need sentinels")
            entries = list(hosts) if hosts else [url or "redis://localhost:6379/0"]
            self._clients = [self._client(entry, max_connections, kwargs) for entry in entries]
            inbox_host = entries[self._ring(_tag(self._inbox_key), len(entries))]
            self._inbox_client = self._client(inbox_host, 1, kwargs)
            self._where = f"Redis at {', '.join(map(_redact, entries))}"

    # ------------------------------------------------------------------ connections

    @staticmethod
    def _address(entry: Any) -> tuple[str, int]:
        if isinstance(entry, str):
            host, _, port = entry.rpartition(":")
            return host, int(port)
        host, port = entry
        return str(host), int(port)

    def _client(self, entry: Any, max_connections: int, kwargs: dict[str, Any]) -> Any:
        """One host: a URL, ``(host, port)``, or a dict (``address`` URL or client keywords)."""
        pool_cls = self._redis.BlockingConnectionPool
        if isinstance(entry, dict):
            entry = dict(entry)
            address = entry.pop("address", None)
            if address is None:
                return self._redis.Redis(**{**kwargs, **entry, "max_connections": max_connections})
            kwargs, entry = {**kwargs, **entry}, address
        if not isinstance(entry, str):
            host, port = self._address(entry)
            entry = f"redis://{host}:{port}/0"
        pool = pool_cls.from_url(entry, max_connections=max_connections, timeout=30, **kwargs)
        return self._redis.Redis(connection_pool=pool)

    @staticmethod
    def _ring(value: str, size: int) -> int:
        """channels_redis's consistent hash: crc32 of the name onto a ring of ``size`` hosts."""
        if size == 1:
            return 0
        return int((binascii.crc32(value.encode()) & 0xFFF) / (_RING_SIZE / float(size)))

    def _for(self, key: str) -> Any:
        if self._cluster is not None:
            return self._cluster
        return self._clients[self._ring(_tag(key), len(self._clients))]

    @property
    def _sharded(self) -> bool:
        return self._cluster is not None or len(self._clients) > 1

    @contextlib.asynccontextmanager
    async def _op(self) -> AsyncIterator[None]:
        """Bound concurrent commands and name the broker when it cannot be reached."""
        from redis import exceptions as rex

        async with self._limit:
            try:
                if self._cluster is not None and cluster_needs_initialize(self._cluster):
                    await self._initialize_cluster()
                yield
            except (rex.ConnectionError, rex.TimeoutError, rex.ClusterDownError, OSError) as exc:
                # Idle connections to a crashed server are dead too: drop them so that the next
                # command after a restart connects afresh instead of failing once per connection.
                for client in self._clients:
                    with contextlib.suppress(Exception):
                        await client.connection_pool.disconnect(inuse_connections=False)
                raise BrokerUnavailable(f"{self._where} is unavailable: {exc}") from exc

    async def _initialize_cluster(self) -> None:
        """Load the slot map once, before concurrent commands: redis-py's RedisCluster lets every
        command that finds it uninitialized run ``initialize()`` at once, and those races close
        connections under other commands (lost and duplicated writes, seen with redis-py 8.1)."""
        async with self._cluster_ready:
            if cluster_needs_initialize(self._cluster):
                await self._cluster.initialize()

    async def _eval(self, client: Any, script: _Script, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return await client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(script.body, len(keys), *keys, *args)

    async def _eval_many(self, calls: list[_Call], *, raise_errors: bool = True) -> list[Any]:
        """Scripts, one pipeline per server, all servers at once; each call's keys share a slot.

        With ``raise_errors=False`` a call's error is its result, so one bad call fails only itself.
        """
        from redis.exceptions import NoScriptError

        by_client: dict[int, tuple[Any, list[int]]] = {}
        for index, (_, keys, _) in enumerate(calls):
            client = self._for(keys[0])
            by_client.setdefault(id(client), (client, []))[1].append(index)
        results: list[Any] = [None] * len(calls)

        async def run(client: Any, indexes: list[int]) -> None:
            pipe = client.pipeline(transaction=False)
            for i in indexes:
                script, keys, args = calls[i]
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            for i, result in zip(indexes, await pipe.execute(raise_on_error=False), strict=True):
                if isinstance(result, NoScriptError):
                    script, keys, args = calls[i]
                    result = await client.eval(script.body, len(keys), *keys, *args)
                elif isinstance(result, Exception) and raise_errors:
                    raise result
                results[i] = result

        await asyncio.gather(*(run(client, indexes) for client, indexes in by_client.values()))
        return results

    async def _pipelined(self, calls: list[_Call]) -> list[Any]:
        merged, spans = _merge_sends(calls)
        async with self._op():
            results = await self._eval_many(merged, raise_errors=False)
        return _split_results(results, spans)

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

    async def _receive(self, channel: str) -> bytes | None:
        key = self._named_key(channel)
        async with self._receive_slots, self._op():
            result = await _abandon_on_cancel(self._for(key).blpop([key], timeout=self.receive_timeout))
        if result is None:
            return None
        entry: bytes = result[1]
        return entry[_STAMP:]

    async def _consume_inbox(self, deliver: Callable[[bytes], None]) -> None:
        from redis.exceptions import ResponseError

        if self._local_groups:  # after a broker restart the memberships are gone: renew them now
            await self._group_refresh(list(self._local_groups))
        client, key, block = self._inbox_client, self._inbox_key, self.receive_timeout * 2
        multi = True
        while True:
            entries: list[bytes] = []
            if multi:
                try:
                    result = await _abandon_on_cancel(
                        client.blmpop(block, 1, key, direction="LEFT", count=_INBOX_BATCH)
                    )
                except ResponseError as exc:  # Redis < 7: no BLMPOP
                    if "unknown command" not in str(exc).lower():
                        raise
                    multi = False
                    continue
                if result:
                    entries = result[1]
            else:
                popped = await _abandon_on_cancel(client.blpop([key], timeout=block))
                if popped:
                    entries = [popped[1]]
            for entry in entries:
                deliver(entry[_STAMP:])
            await self._relieve()

    def _lease_ms(self) -> int:
        return int((time.time() + 3 * self.refresh_interval) * 1000)

    async def _zadd(self, items: list[tuple[str, str, int, int]]) -> None:
        """``ZADD key score member`` + ``PEXPIRE key ttl`` for each item, one pipeline per server."""
        by_client: dict[int, tuple[Any, list[tuple[str, str, int, int]]]] = {}
        for item in items:
            client = self._for(item[0])
            by_client.setdefault(id(client), (client, []))[1].append(item)

        async def run(client: Any, batch: list[tuple[str, str, int, int]]) -> None:
            pipe = client.pipeline(transaction=False)
            for key, member, score, ttl in batch:
                pipe.zadd(key, {member: score})
                pipe.pexpire(key, ttl)
            await pipe.execute()

        async with self._op():
            await asyncio.gather(*(run(client, batch) for client, batch in by_client.values()))

    async def _group_join(self, group: str) -> None:
        await self._group_refresh([group])

    async def _group_refresh(self, groups: list[str]) -> None:
        lease = self._lease_ms()
        ttl = int(3 * self.refresh_interval * 1000) + 1000
        await self._zadd([(self._group_keys(g)[0], self.process_id, lease, ttl) for g in groups])

    async def _group_leave(self, group: str) -> None:
        key = self._group_keys(group)[0]
        async with self._op():
            await self._for(key).zrem(key, self.process_id)

    async def _group_add_channel(self, group: str, channel: str) -> None:
        expires = int((time.time() + self.group_expiry) * 1000)
        await self._zadd([(self._group_keys(group)[1], channel, expires, int(self.group_expiry * 1000) + 1000)])

    async def _group_discard_channel(self, group: str, channel: str) -> None:
        key = self._group_keys(group)[1]
        async with self._op():
            await self._for(key).zrem(key, channel)

    async def _group_send(self, group: str, data: bytes) -> None:
        keys = self._group_keys(group)
        now = int(time.time() * 1000)
        entry = self._group_entry(group, data)
        if not self._sharded:
            args = [self._stamp(), now, entry, data, msgpack.packb(data, use_bin_type=True),
                    self.capacity, self.inbox_capacity, self._ttl_ms, self._kp, self.process_id]
            await self._pipeline.call((GROUP_SEND, keys, args))
            return
        async with self._op():
            processes, channels = await self._eval(self._for(keys[0]), MEMBERS, keys, [now])
        stamp = self._stamp()
        calls: list[_Call] = []
        for process in sorted({p.decode() for p in processes} - {self.process_id}):
            calls.append((SEND, [self._inbox_of(process)], [stamp + entry, self.inbox_capacity, self._ttl_ms, now]))
        for raw in channels:
            key, payload, capacity = self._target(raw.decode(), data)
            calls.append((SEND, [key], [stamp + payload, capacity, self._ttl_ms, now]))
        if calls:
            async with self._op():
                await self._eval_many(calls)

    async def _flush(self) -> None:
        pattern = f"{self._kp}*"
        async with self._op():
            for client in [self._cluster] if self._cluster is not None else self._clients:
                keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
                for start in range(0, len(keys), 500):
                    pipe = client.pipeline(transaction=False)
                    for key in keys[start : start + 500]:
                        pipe.execute_command("UNLINK", key)
                    await pipe.execute()

    async def _close(self) -> None:
        self._pipeline.fail_pending(BrokerUnavailable("the channel layer closed before the command was sent"))
        clients = [self._cluster, self._inbox_client, *self._clients]
        if self._sentinel is not None:
            clients += self._sentinel.sentinels
        for client in clients:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
