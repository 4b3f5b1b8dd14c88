"""The NATS layer: JetStream streams for delivery, KV buckets for group membership.

Layout for a prefix ``P`` (``<P>`` is the prefix as one subject token, see ``subjects.py``):

* stream ``<stream_name>`` (work queue, subjects ``<P>.c.<channel>``): named channels. Capacity is
  ``max_msgs_per_subject`` with ``discard_new_per_subject`` (the publish is refused: ``ChannelFull``),
  expiry is ``max_age``. Receivers of one channel share one durable pull consumer, whatever process
  (``pull.py``).
* stream ``<stream_name>_INBOX`` (work queue, ``<P>.in.<process>``): one inbox per process, read by one
  durable pull consumer of that process with a pull request always outstanding.
* stream ``<stream_name>_BLOBS`` (``<P>.b.<id>``): bodies over the server's ``max_payload`` (``blobs.py``).
* KV buckets ``<group_bucket>`` and ``<group_bucket>_channels``: group membership, watched by every
  process (``membership.py``). ``group_send`` publishes once per member process (plus once per
  channel member), never once per local member.

Every publish waits for the JetStream ack and carries a ``Nats-Msg-Id`` (``publish.py``), and a
redelivery (an ack lost in a reconnect) is dropped by the receiver, so delivery is exactly once across
NATS restarts. Streams are created on first use (``streams.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ...base import BaseChannelLayer
from ...broker import BrokerEnv, require_positive
from ...exceptions import BrokerUnavailable, ChannelFull, ConfigurationError
from ...names import is_process_local, process_of
from .blobs import Blobs
from .connection import NATSConnection
from .membership import Membership, View
from .publish import Publisher
from .pull import NamedPulls, pull_forever
from .streams import Restart, Streams
from .subjects import Subjects, check_stream_name, default_base

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.api import StreamConfig

logger = logging.getLogger("app.channels.nats")

class NATSEnv(BrokerEnv):
    """``FASTAPI_WEBSOCKETS_NATS_*`` (``SERVERS`` is comma-separated)."""

    servers: str | None = None
    group_bucket: str | None = None
    stream_name: str | None = None
    message_timeout: float | None = None
    replicas: int | None = None


class NATSChannelLayer(BaseChannelLayer):
    """Channel layer on NATS JetStream (nats-py). See the module docstring for the layout."""

    env_model = NATSEnv
    inbox_backpressure = True

    def __init__(
        self,
        *,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        group_bucket: str | None = None,
        stream_name: str | None = None,
        message_timeout: float = 5.0,
        replicas: int = 1,
        **config: Any,
    ) -> None:
        super().__init__(**config)
        if isinstance(servers, str):
            servers = servers.split(",")
        self.servers = [s.strip() for s in servers if s.strip()]
        if not self.servers:
            raise ConfigurationError("servers must name at least one NATS url")
        require_positive(message_timeout=message_timeout)
        if not 1 <= int(replicas) <= 5:
            raise ConfigurationError(f"replicas must be 1..5, got {replicas!r}")
        self.message_timeout = float(message_timeout)
        self.replicas = int(replicas)
        base = default_base(self.prefix)
        self.stream_name = check_stream_name("stream_name", stream_name or base.upper())
        self.group_bucket = check_stream_name("group_bucket", group_bucket or f"{base.lower()}_groups")
        self._subjects = Subjects(self.prefix)
        self._inbox_stream = f"{self.stream_name}_INBOX"
        self._blob_stream = f"{self.stream_name}_BLOBS"
        self._procs = View(self.group_bucket, 3 * self.refresh_interval)
        self._chans = View(f"{self.group_bucket}_channels", self.group_expiry)
        self._conn = NATSConnection(self.servers, f"fastapi-websockets {self.prefix} {self.process_id}",
                                    self.message_timeout, self._check_open, lambda: self.closed)
        self._streams = Streams(self._conn, self._stream_configs, lambda: self.closed)
        self._publisher = Publisher(self._conn, self._streams, self.process_id, self.message_timeout,
                                    self._check_open)
        self._blobs = Blobs(self._conn, self._publisher, self._subjects, self._blob_stream, self._count_drop)
        self._pulls = NamedPulls(self._conn, self._streams, self._blobs, self._subjects, self.stream_name)
        self._members = Membership(self._conn, self._streams, self._publisher, self._procs, self._chans,
                                   self._supervise, lambda: self.closed)

    # ------------------------------------------------------------------ layout

    def _count_drop(self) -> None:
        self.dropped += 1

    def _stream_configs(self) -> list[StreamConfig]:
        api, root = self._conn.lib.api, self._subjects.root
        common: dict[str, Any] = {
            "storage": api.StorageType.FILE,
            "num_replicas": self.replicas,
            "duplicate_window": min(self.expiry, 60.0),
        }
        queue: dict[str, Any] = {
            **common,
            "retention": api.RetentionPolicy.WORK_QUEUE,
            "discard": api.DiscardPolicy.NEW,
            "discard_new_per_subject": True,
            "max_age": self.expiry,
        }
        configs = [
            api.StreamConfig(name=self.stream_name, subjects=[f"{root}.c.>"],
                             max_msgs_per_subject=self.capacity, **queue),
            api.StreamConfig(name=self._inbox_stream, subjects=[f"{root}.in.*"],
                             max_msgs_per_subject=self.inbox_capacity, **queue),
            api.StreamConfig(name=self._blob_stream, subjects=[f"{root}.b.*"], max_age=self.expiry,
                             allow_direct=True, **common),
        ]
        for view in (self._procs, self._chans):
            configs.append(api.StreamConfig(
                name=view.stream, subjects=[f"$KV.{view.bucket}.>"], max_msgs_per_subject=1, max_age=view.ttl,
                discard=api.DiscardPolicy.NEW, allow_rollup_hdrs=True, deny_delete=True, allow_direct=True,
                storage=api.StorageType.FILE, num_replicas=self.replicas, duplicate_window=min(view.ttl, 120.0),
            ))
        return configs

    # ------------------------------------------------------------------ broker primitives

    async def _put(self, subject: str, payload: bytes, channel: str) -> None:
        body, headers = await self._blobs.pointer(payload, shared=False)
        await self._publisher.publish(subject, body, headers, channel=channel)

    async def _send(self, channel: str, data: bytes) -> None:
        await self._streams.ensure()
        if is_process_local(channel):
            inbox = self._subjects.inbox(process_of(channel))
            await self._put(inbox, self._channel_entry(channel, data), channel)
        else:
            await self._put(self._subjects.named(channel), data, channel)

    async def _receive(self, channel: str) -> bytes | None:
        return await self._pulls.receive(channel, self.receive_timeout)

    async def _consume_inbox(self, deliver: Callable[[bytes], None]) -> None:
        # Never creates the streams: new_channel() alone needs no broker state (and a layer closed
        # without flush leaves none); the first send or group_add towards this process creates them.
        js = await self._conn.connect()
        api = self._conn.lib.api
        consumer = f"in_{self.process_id}"

        async def handle(msg: Msg) -> None:
            data = await self._blobs.open(msg)
            if data is not None:
                deliver(data)
                await self._relieve()  # acked only once handed over
            await self._conn.client.publish(msg.reply, b"")

        while not self.closed:
            if not await self._streams.wait_for(self._inbox_stream):
                return
            await js.add_consumer(self._inbox_stream, api.ConsumerConfig(
                durable_name=consumer, filter_subject=self._subjects.inbox(self.process_id),
                ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30.0, max_ack_pending=20_000,
                inactive_threshold=300.0,
            ))
            try:
                await pull_forever(self._conn, self._streams, self._inbox_stream, consumer, handle, batch=256)
            except Restart as exc:
                logger.debug("restarting the inbox consumer: %s", exc)
                await asyncio.sleep(0.05)

    async def _group_join(self, group: str) -> None:
        await self._members.ready()
        await self._members.put(self._procs, group, self.process_id)

    async def _group_leave(self, group: str) -> None:
        # Never creates the bucket: nothing to leave in a flushed one (the refresh loop calls this too).
        with contextlib.suppress(BrokerUnavailable):
            await self._members.put(self._procs, group, self.process_id, delete=True, wait=False, create=False)

    async def _group_refresh(self, groups: list[str]) -> None:
        for start in range(0, len(groups), 256):
            await asyncio.gather(*(self._members.put(self._procs, g, self.process_id, wait=False, create=False)
                                   for g in groups[start : start + 256]))

    async def _group_add_channel(self, group: str, channel: str) -> None:
        await self._members.ready()
        await self._members.put(self._chans, group, channel)

    async def _group_discard_channel(self, group: str, channel: str) -> None:
        await self._members.ready()
        await self._members.put(self._chans, group, channel, delete=True)

    async def _group_send(self, group: str, data: bytes) -> None:
        """One publish per other member process (its inbox) and per channel member."""
        await self._members.ready()
        targets: list[tuple[str, bytes]] = []
        entry = self._group_entry(group, data)
        for process in self._procs.alive(group):
            if process != self.process_id:  # the base serves this process's members
                targets.append((self._subjects.inbox(process), entry))
        for channel in self._chans.alive(group):
            if not is_process_local(channel):
                targets.append((self._subjects.named(channel), data))
            elif process_of(channel) == self.process_id:
                self._deliver_entry(self._channel_entry(channel, data))
            else:
                targets.append((self._subjects.inbox(process_of(channel)), self._channel_entry(channel, data)))
        if not targets:
            return
        pointers: dict[int, tuple[bytes, dict[str, str]]] = {}  # one upload per distinct large payload
        for _, payload in targets:
            if id(payload) not in pointers:
                pointers[id(payload)] = await self._blobs.pointer(payload, shared=True)
        results = await asyncio.gather(
            *(self._publisher.publish(subject, *pointers[id(payload)]) for subject, payload in targets),
            return_exceptions=True,
        )
        failure: BaseException | None = None
        for result in results:
            if isinstance(result, ChannelFull):
                self.dropped += 1  # a full member misses this message (Channels semantics)
            elif isinstance(result, BaseException):
                failure = failure or result
        if failure is not None:
            raise failure

    # ------------------------------------------------------------------ lifecycle

    async def _flush(self) -> None:
        await self._streams.delete(
            [self.stream_name, self._inbox_stream, self._blob_stream, self._procs.stream, self._chans.stream],
            before=self._pulls.drop_all,
        )
        self._members.reset()

    async def _close(self) -> None:
        """Say goodbye (bounded, best effort), then close the connection."""
        await self._members.stop()
        nc = self._conn.nc
        if nc is not None and nc.is_connected:
            # others stop sending here at once instead of when the lease ends
            async def goodbye() -> None:
                await asyncio.gather(
                    *(self._members.put(self._procs, g, self.process_id, delete=True, wait=False, create=False)
                      for g in self._local_groups),
                    self._conn.delete_consumer(self._inbox_stream, f"in_{self.process_id}"),
                    self._conn.request_json(f"$JS.API.STREAM.PURGE.{self._inbox_stream}",
                                            {"filter": self._subjects.inbox(self.process_id)}, wait=1.0),
                    return_exceptions=True,
                )

            with contextlib.suppress(Exception):
                await asyncio.wait_for(goodbye(), 2.0)
        await self._conn.close()
