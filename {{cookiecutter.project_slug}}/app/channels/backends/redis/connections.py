"""The Redis layer's clients: one server (``url``), sharded ``hosts``, Sentinel or Cluster.

Per server: a pool of ``max_connections`` for commands plus one connection for the inbox reader.
Every connection is named ``client_name`` (``CLIENT LIST`` shows whose it is), and ``close()``
returns once every one of them is closed: redis-py's ``aclose()`` leaves a pool it was given
open, so each pool is closed here explicitly.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..._compat import cluster_needs_initialize
from ...broker import redact_url
from ...exceptions import ConfigurationError
from .. import import_client

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.sentinel import Sentinel

    Client = Redis | RedisCluster

#: The layer's server when neither ``url`` nor ``hosts`` names one (Celery's default follows it).
DEFAULT_URL = "redis://localhost:6379/0"
RING_SIZE = 4096
CONNECT_TIMEOUT = 5.0
POOL_TIMEOUT = 30.0  # how long a command waits for a free pool connection


def tag(key: str) -> str:
    """The hash tag of a key: what Cluster slots and ``hosts`` sharding go by."""
    return key[key.index("{") + 1 : key.index("}")]


def ring(value: str, size: int) -> int:
    """channels_redis's consistent hash: crc32 of the name onto a ring of ``size`` hosts."""
    if size == 1:
        return 0
    return int((binascii.crc32(value.encode()) & 0xFFF) / (RING_SIZE / float(size)))


def address(entry: Any) -> tuple[str, int]:
    """``"host:port"`` or ``(host, port)`` as a pair."""
    if isinstance(entry, str):
        host, _, port = entry.rpartition(":")
        return host, int(port)
    host, port = entry
    return str(host), int(port)


def describe(entry: Any) -> str:
    """A ``hosts`` entry for messages, without its password."""
    if isinstance(entry, dict):
        entry = entry.get("address") or f"{entry.get('host', 'localhost')}:{entry.get('port', 6379)}"
    return redact_url(entry) if isinstance(entry, str) else str(entry)


class RedisConnections:
    """Every client of one layer, and which one serves a key."""

    def __init__(
        self,
        *,
        url: str | None,
        hosts: Sequence[Any] | None,
        cluster: bool,
        sentinels: Sequence[Any] | None,
        master_name: str | None,
        sentinel_kwargs: dict[str, Any] | None,
        max_connections: int,
        socket_timeout: float,
        client_name: str,
        inbox_tag: str,
    ) -> None:
        self._redis = import_client("redis.asyncio", "redis")
        from redis import exceptions as rex
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        #: What a command raises when the server cannot be reached (``broker_errors`` translates them).
        self.errors: tuple[type[BaseException], ...] = (rex.ConnectionError, rex.TimeoutError, rex.ClusterDownError)
        # No client-side retries: a retried push whose reply was lost would deliver twice.
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": socket_timeout,
            "retry": Retry(NoBackoff(), 0), "client_name": client_name,
        }
        self.cluster: RedisCluster | None = None
        self.clients: list[Redis] = []
        self.sentinel: Sentinel | None = None
        self._cluster_ready = asyncio.Lock()
        if sum((bool(hosts), bool(cluster), bool(sentinels))) > 1:
            raise ConfigurationError("use only one of hosts, cluster=True and sentinels")
        if not sentinels and (sentinel_kwargs or master_name):
            raise ConfigurationError("master_name and sentinel_kwargs need sentinels")
        self.inbox: Client
        if cluster:
            from redis.asyncio.cluster import RedisCluster

            where = url or DEFAULT_URL
            self.cluster = RedisCluster.from_url(where, max_connections=max_connections, **kwargs)
            self.inbox = RedisCluster.from_url(where, max_connections=2, **kwargs)
            self.where = f"Redis Cluster at {redact_url(where)}"
        elif sentinels:
            self._sentinel_clients(url, sentinels, master_name, sentinel_kwargs, max_connections, kwargs)
        else:
            entries = list(hosts) if hosts else [url or DEFAULT_URL]
            self.clients = [self._client(entry, max_connections, kwargs) for entry in entries]
            self.inbox = self._client(entries[ring(inbox_tag, len(entries))], 1, kwargs)
            self.where = f"Redis at {', '.join(map(describe, entries))}"

    def _sentinel_clients(self, url: str | None, sentinels: Sequence[Any], master_name: str | None,
                          sentinel_kwargs: dict[str, Any] | None, max_connections: int,
                          kwargs: dict[str, Any]) -> None:
        from redis.asyncio.connection import parse_url
        from redis.asyncio.sentinel import Sentinel

        if not master_name:
            raise ConfigurationError("sentinels need master_name")
        addresses = [address(s) for s in sentinels]
        if url:  # the master's db and credentials; its address comes from the sentinels
            parsed = parse_url(url)
            kwargs.update({k: parsed[k] for k in ("db", "username", "password") if parsed.get(k) is not None})
        self.sentinel = Sentinel(addresses, sentinel_kwargs=sentinel_kwargs or {}, **kwargs)  # type: ignore[no-untyped-call]
        self.clients = [self.sentinel.master_for(master_name, max_connections=max_connections)]
        self.inbox = self.sentinel.master_for(master_name, max_connections=1)
        self.where = f"Redis master {master_name!r} via sentinels {addresses}"

    def _client(self, entry: Any, max_connections: int, kwargs: dict[str, Any]) -> Redis:
        """One host: a URL, ``(host, port)``, or a dict (``address`` URL or client keywords)."""
        if isinstance(entry, dict):
            entry = dict(entry)
            url = entry.pop("address", None)
            if url is None:
                client: Redis = self._redis.Redis(**{**kwargs, **entry, "max_connections": max_connections})
                return client
            kwargs, entry = {**kwargs, **entry}, url
        if not isinstance(entry, str):
            host, port = address(entry)
            entry = f"redis://{host}:{port}/0"
        pool = self._redis.BlockingConnectionPool.from_url(
            entry, max_connections=max_connections, timeout=POOL_TIMEOUT, **kwargs
        )
        client = self._redis.Redis(connection_pool=pool)
        return client

    @property
    def sharded(self) -> bool:
        """Whether keys of different slots may live on different servers."""
        return self.cluster is not None or len(self.clients) > 1

    def for_key(self, key: str) -> Client:
        if self.cluster is not None:
            return self.cluster
        return self.clients[ring(tag(key), len(self.clients))]

    def command_clients(self) -> list[Client]:
        """One client per server (the whole Cluster counts as one)."""
        return [self.cluster] if self.cluster is not None else list(self.clients)

    async def ready(self) -> None:
        """Load the Cluster's slot map once, before concurrent commands: redis-py's RedisCluster lets
        every command that finds it uninitialized run ``initialize()`` at once, and those races close
        connections under other commands (lost and duplicated writes, seen with redis-py 8.1)."""
        if self.cluster is None or not cluster_needs_initialize(self.cluster):
            return
        async with self._cluster_ready:
            if cluster_needs_initialize(self.cluster):
                await self.cluster.initialize()

    async def drop_idle(self) -> None:
        """After a failure: idle connections to a crashed server are dead too, so the next command
        after a restart connects afresh instead of failing once per pooled connection."""
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.connection_pool.disconnect(inuse_connections=False)

    async def close(self) -> None:
        """Close every connection, in use or not, of every client and pool. Never raises."""
        clusters = [c for c in (self.cluster, self.inbox) if c is not None and not isinstance(c, self._redis.Redis)]
        plain = [c for c in (*self.clients, self.inbox) if isinstance(c, self._redis.Redis)]
        for client in [*plain, *(self.sentinel.sentinels if self.sentinel is not None else [])]:
            with contextlib.suppress(Exception):
                await client.aclose(close_connection_pool=True)
        for cluster in clusters:
            with contextlib.suppress(Exception):
                await cluster.aclose()
