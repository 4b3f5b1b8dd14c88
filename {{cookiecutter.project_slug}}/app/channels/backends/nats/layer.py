"""The NATS layer: JetStream streams for delivery, KV buckets for group membership.

Layout for a prefix ``P`` (``<P>`` is the prefix as one subject token):

* stream ``<stream_name>`` (work queue, subjects ``<P>.c.<channel>``): named channels. Capacity is
  ``max_msgs_per_subject`` with ``discard_new_per_subject`` (the publish is refused: ``ChannelFull``),
  expiry is ``max_age``. Receivers of one channel share one durable pull consumer, whatever process.
* stream ``<stream_name>_INBOX`` (work queue, ``<P>.in.<process>``): one inbox per process, read by one
  durable pull consumer of that process with a pull request always outstanding.
* stream ``<stream_name>_BLOBS`` (``<P>.b.<id>``): bodies over the server's ``max_payload``, uploaded in
  chunks once; the channel or inbox gets a small pointer (header ``Fws-Blob``) instead.
* KV bucket ``<group_bucket>``: key ``<group>.<process>`` per member process, TTL = the lease (three
  refresh intervals). KV bucket ``<group_bucket>_channels``: key ``<group>.<channel>`` per named (or
  foreign) channel, TTL = ``group_expiry``. One key per writer, so concurrent adds never contend.
  Every process WATCHES both buckets (an ephemeral pull consumer) and keeps the current view in
  memory; ``group_send`` reads that view and publishes once per member process (plus once per
  channel member), never once per local member.

Every publish waits for the JetStream ack and carries a ``Nats-Msg-Id``: a publish retried after a
reconnect (bounded by ``message_timeout``) is deduplicated by the server, and a redelivery (an ack
lost in a reconnect) is dropped by the receiver, so delivery is exactly once across NATS restarts.
Background loops never create streams: after ``flush()`` they wait until a foreground call does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import json
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic_settings import BaseSettings

from ..._compat import nats_has_queued, nats_take_queued
from ...base import BaseChannelLayer
from ...exceptions import BrokerUnavailable, ChannelFull, ChannelLayerError, ConfigurationError
from ...names import is_process_local, process_of
from ...tasks import cancel_and_wait
from .. import import_client

logger = logging.getLogger("app.channels.nats")
#: The stream settings this layer chooses: an existing stream that differs in one is a ConfigurationError.
_STREAM_FIELDS = ("subjects", "retention", "discard", "discard_new_per_subject", "max_msgs_per_subject", "max_age",
                  "storage", "num_replicas", "duplicate_window", "allow_direct", "deny_delete", "allow_rollup_hdrs")

_HEARTBEAT = 1.0  # idle heartbeat of outstanding pull requests
_PULL_EXPIRES = 5.0  # lifetime of one pull request
_RECEIVE_WAIT = 2.0  # bounded wait of one named-channel receive
_BLOB_HEADER = "Fws-Blob"
_HEADROOM = 8 * 1024  # room for headers below max_payload
_ESCAPES = {".": "=d", ":": "=c", "!": "=x"}  # '=' never occurs in channel or group names
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}


def _token(name: str) -> str:
    """One subject token for a channel or group name (reversible, KV-key safe)."""
    return re.sub(r"[.:!]", lambda m: _ESCAPES[m.group()], name)


def _untoken(token: str) -> str:
    return re.sub(r"=[dcx]", lambda m: _UNESCAPES[m.group()], token)


def _default_base(prefix: str) -> str:
    """``fastapi-websockets`` -> ``fastapi_websockets``; lossy prefixes get a hash suffix."""
    base = re.sub(r"[^A-Za-z0-9]", "_", prefix)
    if not re.fullmatch(r"[a-z0-9-]+", prefix):
        base += "_" + hashlib.sha256(prefix.encode()).hexdigest()[:8]
    return base


class NATSEnv(BaseSettings):
    """``FASTAPI_WEBSOCKETS_NATS_*`` (``SERVERS`` is comma-separated)."""

    servers: str | None = None
    prefix: str | None = None
    group_bucket: str | None = None
    stream_name: str | None = None
    message_timeout: float | None = None
    capacity: int | None = None
    inbox_capacity: int | None = None
    expiry: float | None = None
    group_expiry: float | None = None
    replicas: int | None = None


class _Restart(Exception):
    """A pull loop lost its consumer (deleted, flushed, or the connection went away)."""


class _View:
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
        self._nats = import_client("nats", "nats")
        self._api = import_client("nats.js.api", "nats")
        self._errors = import_client("nats.errors", "nats")
        self._js_errors = import_client("nats.js.errors", "nats")
        if isinstance(servers, str):
            servers = servers.split(",")
        self.servers = [s.strip() for s in servers if s.strip()]
        if not self.servers:
            raise ConfigurationError("servers must name at least one NATS url")
        if message_timeout <= 0:
            raise ConfigurationError(f"message_timeout must be positive, got {message_timeout!r}")
        if not 1 <= int(replicas) <= 5:
            raise ConfigurationError(f"replicas must be 1..5, got {replicas!r}")
        self.message_timeout = float(message_timeout)
        self.replicas = int(replicas)
        base = _default_base(self.prefix)
        self.stream_name = stream_name or base.upper()
        self.group_bucket = group_bucket or f"{base.lower()}_groups"
        for what, name in (("stream_name", self.stream_name), ("group_bucket", self.group_bucket)):
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,200}", name):
                raise ConfigurationError(f"{what} {name!r} may hold only letters, digits, '-' and '_'")
        self._root = _token(self.prefix)
        self._inbox_stream = f"{self.stream_name}_INBOX"
        self._blob_stream = f"{self.stream_name}_BLOBS"
        self._procs = _View(self.group_bucket, 3 * self.refresh_interval)
        self._chans = _View(f"{self.group_bucket}_channels", self.group_expiry)
        self._nc: Any = None
        self._js: Any = None
        self._connect_lock = asyncio.Lock()
        self._ensure_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._ensured = False
        self._generation = 0  # bumped by flush: pull loops restart
        self._watch_tasks: list[asyncio.Task[None]] = []
        self._named: dict[str, tuple[str, Any]] = {}  # channel -> (consumer, subscription)
        self._ids = itertools.count()
        self._seen: OrderedDict[str, None] = OrderedDict()  # recent Nats-Msg-Ids, drops redeliveries

    # ------------------------------------------------------------------ names

    def _named_subject(self, channel: str) -> str:
        return f"{self._root}.c.{_token(channel)}"

    def _inbox_subject(self, process: str) -> str:
        return f"{self._root}.in.{process}"

    def _stream_configs(self) -> list[Any]:
        api = self._api
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
            api.StreamConfig(name=self.stream_name, subjects=[f"{self._root}.c.>"],
                             max_msgs_per_subject=self.capacity, **queue),
            api.StreamConfig(name=self._inbox_stream, subjects=[f"{self._root}.in.*"],
                             max_msgs_per_subject=self.inbox_capacity, **queue),
            api.StreamConfig(name=self._blob_stream, subjects=[f"{self._root}.b.*"], max_age=self.expiry,
                             allow_direct=True, **common),
        ]
        for view in (self._procs, self._chans):
            configs.append(api.StreamConfig(
                name=view.stream, subjects=[f"$KV.{view.bucket}.>"], max_msgs_per_subject=1, max_age=view.ttl,
                discard=api.DiscardPolicy.NEW, allow_rollup_hdrs=True, deny_delete=True, allow_direct=True,
                storage=api.StorageType.FILE, num_replicas=self.replicas, duplicate_window=min(view.ttl, 120.0),
            ))
        return configs

    # ------------------------------------------------------------------ connection and streams

    async def _connect(self) -> Any:
        """The JetStream context, connecting on first use. nats-py reconnects on its own afterwards."""
        if self._js is not None:
            return self._js
        async with self._connect_lock:
            if self._js is not None:
                return self._js
            self._check_open()
            nc = self._nats.NATS()

            async def on_error(exc: Exception) -> None:
                logger.debug("NATS error: %s", exc)

            async def on_disconnect() -> None:
                self._connected.clear()
                if not self._closed:
                    logger.warning("NATS connection lost; reconnecting")

            async def on_reconnect() -> None:
                self._connected.set()
                logger.info("NATS reconnected to %s", nc.connected_url.netloc if nc.connected_url else "?")

            try:
                await asyncio.wait_for(nc.connect(
                    servers=self.servers, name=f"fastapi-websockets {self.prefix} {self.process_id}",
                    allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.25,
                    connect_timeout=2, ping_interval=5, max_outstanding_pings=2,
                    error_cb=on_error, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
                ), self.message_timeout)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await nc.close()
                raise BrokerUnavailable(f"cannot connect to NATS at {', '.join(self.servers)}: {exc!r}") from exc
            self._connected.set()
            self._nc = nc
            self._js = nc.jetstream(timeout=min(self.message_timeout, 5.0))
        return self._js

    async def _ensure(self, *, force: bool = False) -> None:
        """Create the streams and buckets (idempotent); a differing existing one is a ConfigurationError."""
        if self._ensured and not force:
            return
        generation = self._generation
        js = await self._connect()
        async with self._ensure_lock:
            if self._ensured and not force:
                return
            if generation != self._generation:  # never recreate what a concurrent flush() just deleted
                raise BrokerUnavailable("the layer was flushed while this call was in flight; retry it")
            for config in self._stream_configs():
                await self._add_stream(js, config)
            self._ensured = True

    async def _add_stream(self, js: Any, config: Any) -> None:
        """Create one stream. A concurrent creation by another layer answers 10058 or 10065 although the
        configurations agree; only a difference in the fields this layer sets is a ConfigurationError."""
        for attempt in range(5):
            try:
                await js.add_stream(config)
                return
            except self._js_errors.BadRequestError as exc:
                # 10058: name already in use with another configuration; 10065: subjects overlap
                if exc.err_code not in (10058, 10065):
                    raise ConfigurationError(f"NATS refused stream {config.name!r}: {exc.description}") from exc
                refusal = exc.description
            except (self._errors.TimeoutError, self._errors.NoRespondersError,
                    self._js_errors.ServiceUnavailableError) as exc:
                raise BrokerUnavailable(f"NATS JetStream did not answer creating {config.name!r}: {exc!r}") from exc
            try:
                existing = (await js.stream_info(config.name)).config
            except self._js_errors.NotFoundError:
                existing = config  # not there yet (another layer is creating it) or other subjects overlap
            diff = [f"{f}={getattr(existing, f)!r} (wanted {getattr(config, f)!r})" for f in _STREAM_FIELDS
                    if getattr(config, f) is not None and getattr(existing, f) != getattr(config, f)]
            if diff:
                raise ConfigurationError(
                    f"NATS stream {config.name!r} exists with a different configuration: {'; '.join(diff)}."
                    " Align CONFIG (capacity, inbox_capacity, expiry, group_expiry, replicas) with the running layers,"
                    " or delete the stream (nats stream rm) so it is recreated."
                )
            await asyncio.sleep(0.05 * (attempt + 1))
        raise ConfigurationError(f"NATS refused stream {config.name!r}: {refusal}")

    async def _stream_exists(self, name: str) -> str | None:
        """The stream's creation stamp, or None when it does not exist (never creates it)."""
        js = await self._connect()
        try:
            info = await js.stream_info(name)
        except self._js_errors.NotFoundError:
            return None
        return str(info.created)

    async def _wait_for_stream(self, name: str) -> bool:
        """Poll until ``name`` exists (a foreground call creates it); False once the layer closed.

        Also checks ``closed`` itself: nats-py can swallow a cancellation inside a publish.
        """
        while not self._closed:
            if await self._stream_exists(name) is not None:
                return True
            await asyncio.sleep(0.25)
        return False

    def _check_generation(self, generation: int) -> None:
        if self._closed:
            raise asyncio.CancelledError()
        if generation != self._generation:
            raise _Restart("the layer was flushed")

    # ------------------------------------------------------------------ publishing

    def _msg_id(self) -> str:
        return f"{self.process_id}.{next(self._ids)}"

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None,
                       *, retry: bool = True, channel: str | None = None, create: bool = True) -> int:
        """Publish and wait for the JetStream ack; return the stream sequence.

        Retries across reconnects and leader elections until ``message_timeout`` (the msg id makes a
        retry idempotent), then raises BrokerUnavailable. A full subject raises ChannelFull.
        """
        js = await self._connect()
        errors, js_errors = self._errors, self._js_errors
        headers = {"Nats-Msg-Id": self._msg_id(), **(headers or {})}
        deadline = time.monotonic() + self.message_timeout
        ensured_again = False
        last: Exception | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (last is not None and not retry):
                raise BrokerUnavailable(
                    f"NATS did not acknowledge a publish to {subject!r} within {self.message_timeout}s: {last!r}"
                )
            if not self._nc.is_connected:
                self._check_open()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._connected.wait(), min(remaining, 0.5))
                last = last or errors.ConnectionReconnectingError()
                continue
            try:
                ack = await js.publish(subject, payload, timeout=min(remaining, 2.0), headers=headers)
                return int(ack.seq)
            except js_errors.APIError as exc:
                if exc.err_code == 10077:  # maximum messages per subject exceeded
                    full = f"channel {channel!r}" if channel else f"the inbox behind {subject!r}"
                    raise ChannelFull(f"{full} is full ({exc.description})") from None
                if exc.code is not None and exc.code < 500:
                    raise ChannelLayerError(f"NATS refused a publish to {subject!r}: {exc.description}") from exc
                last = exc
            except js_errors.NoStreamResponseError as exc:
                # No stream takes the subject: flushed by another layer, or a cluster leader election.
                last = exc
                if not create:
                    raise BrokerUnavailable(f"no NATS stream takes {subject!r} (flushed?)") from exc
                if not ensured_again and not self._closed:
                    ensured_again = True
                    try:
                        await self._ensure(force=True)
                    except ChannelLayerError as problem:  # e.g. mid leader election; keep retrying the publish
                        logger.debug("re-creating streams for %r failed: %s", subject, problem)
                    continue
            except (errors.TimeoutError, errors.OutboundBufferLimitError, errors.StaleConnectionError,
                    errors.ConnectionReconnectingError, errors.NoRespondersError) as exc:
                last = exc
            except errors.ConnectionClosedError as exc:
                self._check_open()
                raise BrokerUnavailable(f"the NATS connection is closed: {exc!r}") from exc
            await asyncio.sleep(0.05)

    async def _request_json(self, subject: str, body: dict[str, Any] | None = None, wait: float = 2.0) -> Any:
        await self._connect()
        msg = await self._nc.request(subject, json.dumps(body or {}).encode(), timeout=wait)
        return json.loads(msg.data) if msg.data else {}

    async def _pointer(self, payload: bytes, *, shared: bool) -> tuple[bytes, dict[str, str]]:
        """The payload itself, or for a large one an empty payload with a pointer to its uploaded chunks."""
        limit = max(self._nc.max_payload - _HEADROOM, 1024)
        if len(payload) <= limit:
            return payload, {}
        blob = secrets.token_hex(12)
        subject = f"{self._root}.b.{blob}"
        seqs = await asyncio.gather(*(
            self._publish(subject, payload[i : i + limit]) for i in range(0, len(payload), limit)
        ))
        return b"", {_BLOB_HEADER: f"{blob} {int(shared)} {','.join(map(str, seqs))}"}

    async def _put(self, subject: str, payload: bytes, channel: str) -> None:
        body, headers = await self._pointer(payload, shared=False)
        await self._publish(subject, body, headers, channel=channel)

    # ------------------------------------------------------------------ reading

    async def _open(self, msg: Any) -> bytes | None:
        """The payload of a delivered message: None for a redelivery or a vanished large body."""
        headers = msg.headers
        if not headers:
            return bytes(msg.data)
        msg_id = headers.get("Nats-Msg-Id")
        if msg_id is not None:
            if msg_id in self._seen:
                return None
            self._seen[msg_id] = None
            if len(self._seen) > 50_000:
                self._seen.popitem(last=False)
        pointer = headers.get(_BLOB_HEADER)
        return bytes(msg.data) if pointer is None else await self._download(pointer)

    async def _download(self, pointer: str) -> bytes | None:
        blob, shared, seqs = pointer.split(" ")
        subject = f"{self._root}.b.{blob}"
        parts: list[bytes] = []
        for seq in map(int, seqs.split(",")):
            for attempt in range(20):  # a replica may lag the leader that acked the chunk
                msg = await self._nc.request(f"$JS.API.DIRECT.GET.{self._blob_stream}",
                                             json.dumps({"seq": seq}).encode(), timeout=self.message_timeout)
                status = msg.headers.get("Status") if msg.headers else None
                if status is None and msg.headers and msg.headers.get("Nats-Subject") == subject:
                    parts.append(bytes(msg.data))
                    break
                await asyncio.sleep(0.05 * (attempt + 1))
            else:
                logger.warning("large message body %s expired or vanished; dropping it", blob)
                self.dropped += 1
                return None
        if shared == "0":
            with contextlib.suppress(Exception):
                await self._request_json(f"$JS.API.STREAM.PURGE.{self._blob_stream}", {"filter": subject})
        return b"".join(parts)

    async def _pull_forever(self, stream: str, consumer: str, handle: Callable[[Any], Awaitable[None]],
                            batch: int) -> None:
        """Keep a pull request outstanding on ``consumer`` and hand every message to ``handle``.

        Raises ``_Restart`` when heartbeats stop (consumer deleted, connection lost) or on flush.
        """
        generation = self._generation
        nc = self._nc
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, pending_msgs_limit=4 * batch, pending_bytes_limit=256 * 1024 * 1024)
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        request = json.dumps({"batch": batch, "expires": int(_PULL_EXPIRES * 1e9),
                              "idle_heartbeat": int(_HEARTBEAT * 1e9)}).encode()
        owed, renew_at, heard = 0, 0.0, time.monotonic()
        try:
            while True:
                self._check_generation(generation)
                now = time.monotonic()
                if owed <= batch // 2 or now >= renew_at:
                    await nc.publish(subject, request, reply=inbox)
                    owed, renew_at = owed + batch, now + _PULL_EXPIRES - 1.0
                try:
                    msg = nats_take_queued(sub)
                    if msg is None:
                        msg = await sub.next_msg(timeout=0.5)
                except self._errors.TimeoutError:
                    if time.monotonic() - heard > 3 * _HEARTBEAT:
                        raise _Restart(f"no heartbeat from consumer {consumer!r} of {stream!r}") from None
                    continue
                heard = time.monotonic()
                status = msg.headers.get("Status") if msg.headers else None
                if status is None:
                    owed -= 1
                    await handle(msg)
                elif status in ("404", "408", "409"):
                    description = msg.headers.get("Description", "")
                    if "Deleted" in description:
                        raise _Restart(f"consumer {consumer!r} was deleted")
                    owed -= int(msg.headers.get("Nats-Pending-Messages", batch))
                    owed = max(owed, 0)
                elif status == "503":
                    raise _Restart(f"no responders for consumer {consumer!r}")
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # ------------------------------------------------------------------ broker primitives

    async def _send(self, channel: str, data: bytes) -> None:
        await self._ensure()
        if is_process_local(channel):
            await self._put(self._inbox_subject(process_of(channel)), self._channel_entry(channel, data), channel)
        else:
            await self._put(self._named_subject(channel), data, channel)

    async def _receive(self, channel: str) -> bytes | None:
        await self._ensure()
        state = self._named.get(channel)
        if state is None:
            digest = hashlib.sha256(channel.encode()).hexdigest()[:20]
            consumer = f"ch_{re.sub(r'[^A-Za-z0-9_-]', '_', channel)[:40]}_{digest}"
            config = self._api.ConsumerConfig(
                durable_name=consumer, filter_subject=self._named_subject(channel),
                ack_policy=self._api.AckPolicy.EXPLICIT, ack_wait=30.0, inactive_threshold=3600.0,
            )
            await self._js.add_consumer(self.stream_name, config)
            state = self._named[channel] = (consumer, await self._nc.subscribe(self._nc.new_inbox()))
        consumer, sub = state
        if not nats_has_queued(sub):  # nothing left over from an earlier request
            request = {"batch": 1, "expires": int(_RECEIVE_WAIT * 1e9)}
            await self._nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self.stream_name}.{consumer}",
                                   json.dumps(request).encode(), reply=sub.subject)
        deadline = time.monotonic() + _RECEIVE_WAIT + 1.0
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=remaining)
            except self._errors.TimeoutError:
                break
            status = msg.headers.get("Status") if msg.headers else None
            if status == "100":
                continue
            if status is not None:
                return None  # 404/408: nothing arrived in time; 409: retry on the next call
            await self._nc.publish(msg.reply, b"")  # ack: the message leaves the work queue
            data = await self._open(msg)
            if data is not None:
                return data
            return None
        # No answer at all: the consumer or the connection is gone; recreate it next time.
        self._named.pop(channel, None)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        return None

    async def _consume_inbox(self, deliver: Callable[[bytes], None]) -> None:
        # Never creates the streams: new_channel() alone needs no broker state (and a layer closed
        # without flush leaves none); the first send or group_add towards this process creates them.
        await self._connect()
        consumer = f"in_{self.process_id}"

        async def handle(msg: Any) -> None:
            data = await self._open(msg)
            if data is not None:
                deliver(data)
                await self._relieve()  # acked only once handed over
            await self._nc.publish(msg.reply, b"")

        while not self._closed:
            if not await self._wait_for_stream(self._inbox_stream):
                return
            await self._js.add_consumer(self._inbox_stream, self._api.ConsumerConfig(
                durable_name=consumer, filter_subject=self._inbox_subject(self.process_id),
                ack_policy=self._api.AckPolicy.EXPLICIT, ack_wait=30.0, max_ack_pending=20_000,
                inactive_threshold=300.0,
            ))
            try:
                await self._pull_forever(self._inbox_stream, consumer, handle, batch=256)
            except _Restart as exc:
                logger.debug("restarting the inbox consumer: %s", exc)
                await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ groups

    def _start_watchers(self) -> None:
        if not self._watch_tasks:
            self._watch_tasks = [self._supervise(f"watch {view.bucket}", functools.partial(self._watch, view))
                                 for view in (self._procs, self._chans)]

    async def _watch(self, view: _View) -> None:
        """Follow one bucket forever: last value per key first, then every change."""
        api = self._api
        while not self._closed:
            generation = self._generation
            created = await self._stream_exists(view.stream)
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
            info = await self._js.add_consumer(view.stream, config)
            if info.num_pending == 0:
                view.caught_up.set()
            prefix = len(f"$KV.{view.bucket}.")

            async def handle(msg: Any, view: _View = view, generation: int = generation, prefix: int = prefix) -> None:
                self._check_generation(generation)
                meta = msg.metadata
                seq = meta.sequence.stream
                group_token, _, member_token = msg.subject[prefix:].partition(".")
                operation = msg.headers.get("KV-Operation") if msg.headers else None
                deadline = None
                if operation is None:
                    now, stamp = time.time(), meta.timestamp.timestamp()
                    deadline = stamp + view.ttl if 0 <= now - stamp <= view.ttl else now + view.ttl
                view.apply(_untoken(group_token), _untoken(member_token), seq, deadline)
                view.last_seq = max(view.last_seq, seq)
                view.prune_tombstones()
                if meta.num_pending == 0:
                    view.caught_up.set()
                async with view.changed:
                    view.changed.notify_all()

            try:
                await self._pull_forever(view.stream, info.name, handle, batch=1024)
            except _Restart as exc:
                logger.debug("restarting the watch of %s: %s", view.bucket, exc)
                await asyncio.sleep(0.05)
            finally:
                if self._nc.is_connected:
                    with contextlib.suppress(BaseException):
                        await asyncio.wait_for(self._delete_consumer(view.stream, info.name), 1.0)

    async def _delete_consumer(self, stream: str, consumer: str) -> None:
        with contextlib.suppress(Exception):
            await self._request_json(f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}", wait=1.0)

    async def _views_ready(self) -> None:
        """Wait (bounded) until both watchers have read their bucket once."""
        await self._ensure()
        self._start_watchers()
        if self._procs.caught_up.is_set() and self._chans.caught_up.is_set():
            return
        try:
            await asyncio.wait_for(asyncio.gather(self._procs.caught_up.wait(), self._chans.caught_up.wait()),
                                   self.message_timeout)
        except TimeoutError:
            raise BrokerUnavailable(f"could not read the group buckets within {self.message_timeout}s") from None

    async def _kv(self, view: _View, group: str, member: str, *, delete: bool = False, wait: bool = True,
                  create: bool = True) -> None:
        """Put or delete one membership key, apply it to our view, then (bounded) wait for the
        watcher to pass it, so this view includes every change made before ours."""
        subject = f"$KV.{view.bucket}.{_token(group)}.{_token(member)}"
        seq = await self._publish(subject, b"", {"KV-Operation": "DEL"} if delete else None, create=create)
        view.apply(group, member, seq, None if delete else time.time() + view.ttl)
        if wait:
            with contextlib.suppress(TimeoutError):
                async with view.changed:
                    await asyncio.wait_for(view.changed.wait_for(lambda: view.last_seq >= seq), 2.0)

    async def _group_join(self, group: str) -> None:
        await self._views_ready()
        await self._kv(self._procs, group, self.process_id)

    async def _group_leave(self, group: str) -> None:
        # Never creates the bucket: nothing to leave in a flushed one (the refresh loop calls this too).
        with contextlib.suppress(BrokerUnavailable):
            await self._kv(self._procs, group, self.process_id, delete=True, wait=False, create=False)

    async def _group_refresh(self, groups: list[str]) -> None:
        for start in range(0, len(groups), 256):
            await asyncio.gather(*(self._kv(self._procs, g, self.process_id, wait=False, create=False)
                                   for g in groups[start : start + 256]))

    async def _group_add_channel(self, group: str, channel: str) -> None:
        await self._views_ready()
        await self._kv(self._chans, group, channel)

    async def _group_discard_channel(self, group: str, channel: str) -> None:
        await self._views_ready()
        await self._kv(self._chans, group, channel, delete=True)

    async def _group_send(self, group: str, data: bytes) -> None:
        """One publish per other member process (its inbox) and per channel member."""
        await self._views_ready()
        targets: list[tuple[str, bytes]] = []
        entry = self._group_entry(group, data)
        for process in self._procs.alive(group):
            if process != self.process_id:  # the base serves this process's members
                targets.append((self._inbox_subject(process), entry))
        for channel in self._chans.alive(group):
            if not is_process_local(channel):
                targets.append((self._named_subject(channel), data))
            elif process_of(channel) == self.process_id:
                self._deliver_entry(self._channel_entry(channel, data))
            else:
                targets.append((self._inbox_subject(process_of(channel)), self._channel_entry(channel, data)))
        if not targets:
            return
        pointers: dict[int, tuple[bytes, dict[str, str]]] = {}  # one upload per distinct large payload
        for _, payload in targets:
            if id(payload) not in pointers:
                pointers[id(payload)] = await self._pointer(payload, shared=True)
        results = await asyncio.gather(
            *(self._publish(subject, *pointers[id(payload)]) for subject, payload in targets), return_exceptions=True
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
        await self._connect()
        async with self._ensure_lock:  # an ensure in progress finishes first, a later one sees the new generation
            self._generation += 1
            self._ensured = False
            for channel in list(self._named):
                await self._drop_named(channel)
            for name in (self.stream_name, self._inbox_stream, self._blob_stream, self._procs.stream,
                         self._chans.stream):
                with contextlib.suppress(self._js_errors.NotFoundError):
                    await self._js.delete_stream(name)
        for view in (self._procs, self._chans):
            view.reset()

    async def _drop_named(self, channel: str) -> None:
        state = self._named.pop(channel, None)
        if state is not None:
            with contextlib.suppress(Exception):
                await state[1].unsubscribe()

    async def _close(self) -> None:
        await cancel_and_wait(self._watch_tasks)
        nc = self._nc
        if nc is None:
            return
        if nc.is_connected:
            # Best effort, bounded: others stop sending here at once instead of when the lease ends.
            async def goodbye() -> None:
                await asyncio.gather(
                    *(self._kv(self._procs, g, self.process_id, delete=True, wait=False, create=False)
                      for g in self._local_groups),
                    self._delete_consumer(self._inbox_stream, f"in_{self.process_id}"),
                    self._request_json(f"$JS.API.STREAM.PURGE.{self._inbox_stream}",
                                       {"filter": self._inbox_subject(self.process_id)}, wait=1.0),
                    return_exceptions=True,
                )

            with contextlib.suppress(Exception):
                await asyncio.wait_for(goodbye(), 2.0)
        with contextlib.suppress(Exception):
            await nc.close()
