"""The RabbitMQ layer (aio-pika): RabbitMQ routes and fans out, the process delivers locally.

Broker objects, for ``queue_prefix`` Q (default: ``prefix``) and ``exchange_name`` X
(default: ``<prefix>.groups``, a direct exchange):

* ``Q.inbox.<process>``: this process's inbox, an *exclusive* queue (it dies with the
  connection, so a dead process's group memberships vanish at once: that is the lease, and
  ``_group_refresh`` has nothing to do). Joining a group binds it to X with the group name
  as routing key, leaving unbinds it, so ``group_send`` is ONE publish to X and RabbitMQ
  copies it once per member process.
* ``Q.channel.<name>``: a named channel, a durable queue (quorum with ``quorum=True``) with
  ``x-max-length=capacity`` and ``x-overflow=reject-publish``: a full channel nacks the
  publish, which ``send`` raises as ``ChannelFull``. (``capacity`` counts the messages waiting
  on the broker, not those a receiver prefetched; a quorum queue applies it asynchronously,
  so concurrent sends that race the limit may overshoot it a little.)
* ``Q.member.<group>/<channel>``: a named channel (or another process's channel) added to a
  group. It is bound to X, holds nothing (``x-message-ttl=0``) and dead-letters each
  message into the channel's queue (or the owner's inbox); its ``x-expires`` is
  ``group_expiry``, so RabbitMQ itself deletes the membership (and its binding) when it
  is not re-added in time, even if every process that added it died.

A group message also reaches the sender's own members at once, in process (like a local
send); the copy the exchange routes back to the sender's inbox carries its process id in
header ``o`` and is skipped. ``new_channel`` declares the inbox before returning a name, so
a message sent to it right away cannot be unroutable.

Every publish waits for its publisher confirm and carries ``expiration`` = ``expiry``. One
robust connection per layer, with three channels: publishing (confirms), the inbox
consumer, and the named-channel consumers (one consumer per named channel received,
reused; idle ones are cancelled). aio-pika restores the channels, the inbox queue, its
bindings and the consumers after a reconnect. Every broker call is bounded by ``timeout``
and fails as ``BrokerUnavailable``.

Delivery guarantees: confirmed messages to named channels survive a broker restart when
``durable`` (persistent messages in durable queues). A named message is acked when handed
to the receiver, so a connection lost between the two may deliver it twice. Inbox messages
are transient: those queued at the instant the connection drops are lost, like the
process-local channels themselves would be if the process died.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from pydantic_settings import BaseSettings

from ...base import BaseChannelLayer
from ...exceptions import BrokerUnavailable, ChannelFull, ConfigurationError
from ...names import is_process_local, process_of
from ...tasks import cancel_and_wait
from .. import import_client

if TYPE_CHECKING:
    import aiormq
    from aio_pika import RobustChannel
    from aio_pika.abc import (
        AbstractIncomingMessage,
        AbstractQueue,
        AbstractRobustChannel,
        AbstractRobustConnection,
        AbstractRobustQueue,
    )

logger = logging.getLogger("app.channels.rabbitmq")

#: How long one ``_receive`` waits for a named channel's message before returning None.
RECEIVE_WAIT = 2.0
#: A named-channel consumer nobody received from for this long is cancelled (its unacked
#: prefetched messages go back to the queue for other processes).
NAMED_IDLE = 30.0
INBOX_PREFETCH = 512
NAMED_PREFETCH = 20
_AMQP_NAME = re.compile(r"[a-zA-Z0-9\-_.:]{1,150}")


class RabbitMQEnv(BaseSettings):
    """``FASTAPI_WEBSOCKETS_RABBITMQ_*`` (an empty ``MESSAGE_TTL``/``QUEUE_EXPIRY`` disables it)."""

    url: str | None = None
    exchange_name: str | None = None
    queue_prefix: str | None = None
    durable: bool | None = None
    message_ttl: int | None = None
    queue_expiry: int | None = None
    poll_interval: float | None = None
    capacity: int | None = None
    inbox_capacity: int | None = None
    quorum: bool | None = None
    prefix: str | None = None
    expiry: float | None = None
    group_expiry: float | None = None
    timeout: float | None = None


def _client() -> ModuleType:
    return import_client("aio_pika", "rabbitmq")


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


@dataclass
class _NamedConsumer:
    """A consumer of one named channel; prefetched messages wait, unacked, in ``buffer``."""

    queue: AbstractQueue
    tag: str
    underlay: aiormq.Channel  # the AMQP channel it consumes on (a new one after a reconnect)
    buffer: asyncio.Queue[AbstractIncomingMessage] = field(default_factory=asyncio.Queue)
    last_used: float = field(default_factory=time.monotonic)
    busy: bool = False

    @property
    def alive(self) -> bool:
        """False once its channel closed (reconnect) or the broker cancelled it (queue deleted)."""
        return not self.underlay.is_closed and self.tag in self.underlay.consumers


class RabbitMQChannelLayer(BaseChannelLayer):
    """Named channels are queues; each process has one exclusive inbox; groups are bindings."""

    env_model = RabbitMQEnv

    def __init__(
        self,
        *,
        url: str = "amqp://guest:guest@localhost:5672/",
        exchange_name: str | None = None,
        queue_prefix: str | None = None,
        durable: bool = True,
        message_ttl: int | None = None,
        queue_expiry: int | None = None,
        poll_interval: float = 1.0,
        quorum: bool = False,
        timeout: float = 10.0,
        **config: Any,
    ) -> None:
        """``message_ttl``/``queue_expiry`` are milliseconds (queue arguments of named channels;
        None: no cap beyond each message's own ``expiry``, queues never expire). ``poll_interval``
        is the pause between reconnect attempts. ``timeout`` bounds every broker call."""
        super().__init__(**config)
        if quorum and not durable:
            raise ConfigurationError("quorum=True needs durable=True: quorum queues are always durable")
        for key, value in (("message_ttl", message_ttl), ("queue_expiry", queue_expiry)):
            if value is not None and value < (0 if key == "message_ttl" else 1):
                raise ConfigurationError(f"{key} must be a positive number of milliseconds or None, got {value!r}")
        if timeout <= 0 or poll_interval <= 0:
            raise ConfigurationError("timeout and poll_interval must be positive")
        for key, name in (("exchange_name", exchange_name), ("queue_prefix", queue_prefix)):
            if name is not None and not _AMQP_NAME.fullmatch(name):
                raise ConfigurationError(f"{key} {name!r} is not a valid AMQP name: use letters, digits and -_.:")
        self.url = url
        self.queue_prefix = queue_prefix or self.prefix
        self.exchange_name = exchange_name or f"{self.prefix}.groups"
        self.durable = durable
        self.quorum = quorum
        self.message_ttl = message_ttl
        self.queue_expiry = queue_expiry
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.inbox_name = f"{self.queue_prefix}.inbox.{self.process_id}"
        self._expiration = str(max(1, int(self.expiry * 1000)))
        self._connection: AbstractRobustConnection | None = None
        self._pub: AbstractRobustChannel | None = None  # publishes (confirms), declares, deletes
        self._sub: AbstractRobustChannel | None = None  # the exchange and the inbox consumer
        self._named: AbstractRobustChannel | None = None  # named-channel consumers
        self._connect_lock = asyncio.Lock()
        self._inbox: AbstractRobustQueue | None = None
        self._inbox_lock = asyncio.Lock()
        self._inbox_tag: str | None = None
        self._ack_latest: AbstractIncomingMessage | None = None
        self._acker: asyncio.Task[None] | None = None
        self._exchange_ready = False
        self._joined: set[str] = set()
        self._declared: set[str] = set()  # named-channel queues this layer declared
        self._members: set[str] = set()  # membership queues this layer declared
        self._consumers: dict[str, _NamedConsumer] = {}
        self._reaper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ names

    def _channel_queue(self, channel: str) -> str:
        return f"{self.queue_prefix}.channel.{channel}"

    def _inbox_of(self, process: str) -> str:
        return f"{self.queue_prefix}.inbox.{process}"

    def _member_queue(self, group: str, channel: str) -> str:
        # AMQP names allow no '!', and '/', '#' and '@' occur in no channel or group name
        name = f"{self.queue_prefix}.member.{group}/{channel.replace('!', '#')}"
        if len(name) > 255:  # the AMQP limit: shorten the group part, keep the channel (it is parsed back)
            digest = hashlib.sha1(group.encode(), usedforsecurity=False).hexdigest()
            name = f"{self.queue_prefix}.member.@{digest}/{channel.replace('!', '#')}"
        return name

    @property
    def _where(self) -> str:
        parts = urlsplit(self.url)
        return f"RabbitMQ at {parts.hostname or 'localhost'}:{parts.port or 5672}"

    # ------------------------------------------------------------------ connection and errors

    @contextlib.asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        """Bound a broker call by ``timeout`` and turn client errors into this layer's errors."""
        errors = _client().exceptions
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except BrokerUnavailable:
            raise  # from a nested call, already explained
        except TimeoutError:
            raise BrokerUnavailable(f"{self._where}: {what} timed out after {self.timeout}s (broker down?)") from None
        except errors.ChannelPreconditionFailed as exc:
            raise ConfigurationError(
                f"{self._where} refused to {what}: {exc}. A queue or exchange of that name exists with other"
                " settings (capacity, durable, quorum, message_ttl, queue_expiry, group_expiry): use the same"
                " CONFIG in every process, or another prefix"
            ) from exc
        except (errors.AMQPError, errors.ChannelInvalidStateError, ConnectionError, OSError) as exc:
            raise BrokerUnavailable(f"{self._where}: {what} failed: {type(exc).__name__}: {exc}") from exc

    async def _connect(self) -> AbstractRobustConnection:
        if self._connection is not None:
            return self._connection
        async with self._connect_lock:
            if self._connection is not None:
                return self._connection
            self._check_open()
            aio_pika = _client()
            # built here rather than by connect_robust(), so a connect that times out can be closed:
            # otherwise its reconnect loop would live on in the background
            connection: AbstractRobustConnection = aio_pika.RobustConnection(
                aio_pika.connection.make_url(self.url, reconnect_interval=self.poll_interval),
                client_properties={"connection_name": f"{self.prefix} {self.process_id}"},
            )
            try:
                async with self._guard("connect"):
                    await connection.connect(timeout=self.timeout)
                async with self._guard("open channels"):
                    self._pub = connection.channel(publisher_confirms=True, on_return_raises=True)
                    await self._pub.initialize()
                    self._sub = connection.channel(publisher_confirms=False)
                    await self._sub.initialize()
                    await self._sub.set_qos(prefetch_count=INBOX_PREFETCH)
                    self._named = connection.channel(publisher_confirms=False)
                    await self._named.initialize()
                    await self._named.set_qos(prefetch_count=NAMED_PREFETCH)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), self.timeout)
                raise
            self._connection = connection
            return connection

    async def _channels(self) -> tuple[AbstractRobustChannel, AbstractRobustChannel, AbstractRobustChannel]:
        await self._connect()
        assert self._pub is not None and self._sub is not None and self._named is not None
        return self._pub, self._sub, self._named

    async def _reopened(self, channel: AbstractRobustChannel, what: str) -> None:
        """Wait (bounded) until aio-pika reopened and restored a channel the broker closed."""
        async with self._guard(what):
            # aio-pika reopens it from a close callback that may not have run yet; it offers no
            # event for "closed, then reopened", so poll briefly (bounded by the guard)
            while channel.is_closed:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await cast("RobustChannel", channel).ready()  # the ABC lacks ready() since aio-pika 9.6

    async def _ensure_exchange(self) -> None:
        if self._exchange_ready:
            return
        _, sub, _ = await self._channels()
        async with self._guard(f"declare exchange {self.exchange_name!r}"):
            # on the inbox channel, so aio-pika re-declares it before re-binding the inbox
            await sub.declare_exchange(self.exchange_name, "direct", durable=self.durable, timeout=self.timeout)
        self._exchange_ready = True

    async def _ensure_inbox(self) -> AbstractRobustQueue:
        if self._inbox is not None:
            return self._inbox
        async with self._inbox_lock:
            if self._inbox is None:
                _, sub, _ = await self._channels()
                async with self._guard("declare this process's inbox"):
                    self._inbox = await sub.declare_queue(
                        self.inbox_name,
                        exclusive=True,
                        arguments={"x-max-length": self.inbox_capacity, "x-overflow": "reject-publish"},
                        timeout=self.timeout,
                    )
            return self._inbox

    def _named_arguments(self) -> dict[str, Any]:
        # a quorum queue rejects only once it holds MORE than x-max-length, and applies the limit
        # asynchronously: exact for sequential sends, concurrent ones in flight may overshoot it
        limit = self.capacity - 1 if self.quorum else self.capacity
        arguments: dict[str, Any] = {"x-max-length": limit, "x-overflow": "reject-publish"}
        if self.message_ttl is not None:
            arguments["x-message-ttl"] = self.message_ttl
        if self.queue_expiry is not None:
            arguments["x-expires"] = self.queue_expiry
        if self.quorum:
            arguments["x-queue-type"] = "quorum"
        return arguments

    async def _declare_named(self, channel: str, *, force: bool = False) -> str:
        name = self._channel_queue(channel)
        if force or name not in self._declared:
            pub, _, _ = await self._channels()
            async with self._guard(f"declare channel {channel!r}"):
                await pub.declare_queue(
                    name, durable=self.durable, arguments=self._named_arguments(), timeout=self.timeout, robust=False
                )
            self._declared.add(name)
        return name

    # ------------------------------------------------------------------ publishing

    async def _publish(
        self, exchange: str, routing_key: str, data: bytes, *, what: str, headers: dict[str, Any] | None = None,
        persistent: bool = False, mandatory: bool = False,
    ) -> str:
        """Publish and wait for the confirm: ``"ack"``, ``"nack"`` (a queue was full) or ``"returned"``."""
        errors = _client().exceptions
        from pamqp.commands import Basic

        properties = Basic.Properties(
            delivery_mode=2 if persistent else 1, expiration=self._expiration, headers=headers
        )
        pub, _, _ = await self._channels()
        for attempt in range(2):
            try:
                async with self._guard(what):
                    try:
                        channel = await pub.get_underlay_channel()
                        await channel.basic_publish(
                            data, exchange=exchange, routing_key=routing_key, properties=properties,
                            mandatory=mandatory, timeout=self.timeout,
                        )
                        return "ack"
                    except errors.PublishError:
                        return "returned"
                    except errors.DeliveryError:
                        return "nack"
            except BrokerUnavailable as exc:
                cause = exc.__cause__
                if attempt or self._closed:
                    raise
                if isinstance(cause, errors.ChannelNotFoundEntity) and exchange:
                    # the exchange was flushed by another layer: declare it again, publish again
                    self._exchange_ready = False
                    await self._ensure_exchange()
                elif isinstance(cause, (errors.ChannelClosed, errors.ChannelInvalidStateError)):
                    await self._reopened(pub, what)
                else:
                    raise
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ broker primitives

    async def new_channel(self, prefix: str = "specific") -> str:
        """Declare the inbox before handing out a name, so a send to it cannot be dropped."""
        self._check_open()
        await self._ensure_inbox()
        return await super().new_channel(prefix)

    async def _send(self, channel: str, data: bytes) -> None:
        if is_process_local(channel):
            process = process_of(channel)
            result = await self._publish(
                "", self._inbox_of(process), data, what=f"send to {channel!r}", headers={"c": channel}, mandatory=True
            )
            if result == "nack":
                raise ChannelFull(f"channel {channel!r} is full: its process inbox holds {self.inbox_capacity}")
            if result == "returned":
                self.dropped += 1  # its process is gone (its exclusive inbox died with it)
            return
        for attempt in range(2):
            name = await self._declare_named(channel, force=bool(attempt))
            result = await self._publish(
                "", name, data, what=f"send to {channel!r}", persistent=self.durable, mandatory=True
            )
            if result == "ack":
                return
            if result == "nack":
                raise ChannelFull(f"channel {channel!r} is full ({self.capacity} messages)")
            self._declared.discard(name)  # returned: the queue was deleted meanwhile; declare it again
        raise BrokerUnavailable(f"{self._where}: channel {channel!r} has no queue even after declaring it")

    async def _receive(self, channel: str) -> bytes | None:
        consumer = self._consumers.get(channel)
        if consumer is None or not consumer.alive:
            # its buffered messages are stale: the broker requeued them (or they went with their queue)
            consumer = await self._start_consumer(channel)
        consumer.busy = True
        try:
            deadline = asyncio.get_running_loop().time() + RECEIVE_WAIT
            while True:
                try:
                    message = consumer.buffer.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        async with asyncio.timeout_at(deadline):
                            message = await consumer.buffer.get()
                    except TimeoutError:
                        return None
                try:
                    # ack before returning: once acked, the message is ours; if its channel died since,
                    # this fails and the broker (which requeued it) will deliver it again
                    await asyncio.wait_for(message.ack(), self.timeout)
                except Exception:
                    continue
                return message.body
        finally:
            consumer.busy = False
            consumer.last_used = time.monotonic()

    async def _start_consumer(self, channel: str) -> _NamedConsumer:
        await self._declare_named(channel)
        _, _, named = await self._channels()
        what = f"consume channel {channel!r}"
        async with self._guard(what):
            # not robust: after a reconnect (or a flush elsewhere) the next _receive starts a new
            # consumer itself, instead of aio-pika re-creating a queue that was deleted on purpose
            queue = await named.declare_queue(
                self._channel_queue(channel), durable=self.durable, arguments=self._named_arguments(),
                timeout=self.timeout, robust=False,
            )
            underlay = cast("aiormq.Channel", await named.get_underlay_channel())
        # our own tag, registered before consuming: a consume that times out after the broker
        # started it can still be cancelled, and its deliveries are not stranded in a lost buffer
        consumer = _NamedConsumer(queue, f"{self.prefix}.{self.process_id}.{secrets.token_hex(6)}", underlay)

        async def on_message(message: AbstractIncomingMessage) -> None:
            if self._consumers.get(channel) is consumer:
                consumer.buffer.put_nowait(message)
            else:  # stopped, or replaced: give it back for another consumer
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(message.nack(requeue=True), self.timeout)

        self._consumers[channel] = consumer
        try:
            async with self._guard(what):
                await queue.consume(on_message, consumer_tag=consumer.tag, timeout=self.timeout, robust=False)
        except BaseException:
            await self._stop_consumer(channel)
            raise
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle(), name="rabbitmq idle consumers")
        return consumer

    async def _stop_consumer(self, channel: str) -> None:
        """Cancel a named channel's consumer; its prefetched, unacked messages return to the queue."""
        consumer = self._consumers.pop(channel, None)
        if consumer is None or consumer.underlay.is_closed:
            return  # (on a closed channel the broker has requeued its messages already)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.queue.cancel(consumer.tag), self.timeout)
        while not consumer.buffer.empty():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.buffer.get_nowait().nack(requeue=True), self.timeout)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(NAMED_IDLE / 3)
            now = time.monotonic()
            for channel, consumer in list(self._consumers.items()):
                if not consumer.busy and now - consumer.last_used > NAMED_IDLE:
                    await self._stop_consumer(channel)

    async def _consume_inbox(self, deliver: Callable[[bytes], None]) -> None:
        inbox = await self._ensure_inbox()
        if self._inbox_tag is None:

            async def on_message(message: AbstractIncomingMessage) -> None:
                entry = self._inbox_entry(message)
                if entry is None:
                    logger.warning("dropping an inbox message for no channel or group (headers %r)", message.headers)
                    self.dropped += 1
                elif entry:
                    deliver(entry)
                self._ack_latest = message
                if self._acker is None or self._acker.done():
                    self._acker = asyncio.get_running_loop().create_task(self._ack_inbox())

            async with self._guard("consume this process's inbox"):
                # robust: aio-pika consumes again on its own after a reconnect
                self._inbox_tag = await inbox.consume(on_message, timeout=self.timeout)
        await asyncio.Future()  # forever; the base cancels it on close

    async def _ack_inbox(self) -> None:
        """Ack delivered inbox messages in batches (one ``multiple`` ack for a burst of deliveries)."""
        while self._ack_latest is not None:
            for _ in range(3):  # let the rest of this burst reach on_message first
                await asyncio.sleep(0)
            message, self._ack_latest = self._ack_latest, None
            with contextlib.suppress(Exception):  # a closed channel: the broker dropped the ack state anyway
                await asyncio.wait_for(message.ack(multiple=True), self.timeout)

    def _inbox_entry(self, message: AbstractIncomingMessage) -> bytes | None:
        """The base's inbox entry for a delivered message; ``b""``: skip it, None: not understood."""
        headers = message.headers or {}
        if message.exchange == self.exchange_name and message.routing_key:
            if _text(headers.get("o")) == self.process_id:
                return b""  # sent by this process, which delivered it to its members already
            return self._group_entry(message.routing_key, message.body)
        channel = _text(headers.get("c"))
        if channel is None:  # dead-lettered from a membership queue ``Q.member.<group>/<channel>``
            died_in = _text(headers.get("x-first-death-queue")) or ""
            channel = died_in.rpartition("/")[2].replace("#", "!") if "/" in died_in else None
        return None if channel is None else self._channel_entry(channel, message.body)

    async def _bind(self, channel: AbstractRobustChannel, what: str, bind: Callable[[], Awaitable[object]]) -> None:
        """Bind to the exchange; if a flush elsewhere deleted it, declare it again and retry once."""
        errors = _client().exceptions
        for attempt in range(2):
            await self._ensure_exchange()
            try:
                async with self._guard(what):
                    await bind()
                return
            except BrokerUnavailable as exc:
                if attempt or not isinstance(exc.__cause__, errors.ChannelNotFoundEntity):
                    raise
                self._exchange_ready = False
                await self._reopened(channel, what)

    async def _group_join(self, group: str) -> None:
        inbox = await self._ensure_inbox()
        _, sub, _ = await self._channels()
        await self._bind(
            sub, f"join group {group!r}", lambda: inbox.bind(self.exchange_name, group, timeout=self.timeout)
        )
        self._joined.add(group)

    async def _group_leave(self, group: str) -> None:
        self._joined.discard(group)
        inbox = await self._ensure_inbox()
        errors = _client().exceptions
        try:
            async with self._guard(f"leave group {group!r}"):
                await inbox.unbind(self.exchange_name, group, timeout=self.timeout)
        except BrokerUnavailable as exc:
            if not isinstance(exc.__cause__, errors.ChannelNotFoundEntity):
                raise  # a missing exchange (flushed) has no binding left to remove

    async def _group_refresh(self, groups: list[str]) -> None:
        """Nothing to renew: the inbox is exclusive, so its bindings end with this process's connection."""

    async def _group_add_channel(self, group: str, channel: str) -> None:
        if is_process_local(channel):
            target = self._inbox_of(process_of(channel))
        else:
            target = await self._declare_named(channel)
        pub, _, _ = await self._channels()
        name = self._member_queue(group, channel)
        what = f"add {channel!r} to group {group!r}"
        async with self._guard(what):
            # re-declaring restarts x-expires: a member lasts group_expiry after its latest group_add
            queue = await pub.declare_queue(
                name,
                durable=self.durable,
                arguments={
                    "x-message-ttl": 0,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": target,
                    "x-expires": max(1, int(self.group_expiry * 1000)),
                },
                timeout=self.timeout,
                robust=False,
            )
        self._members.add(name)
        await self._bind(pub, what, lambda: queue.bind(self.exchange_name, group, timeout=self.timeout, robust=False))

    async def _group_discard_channel(self, group: str, channel: str) -> None:
        pub, _, _ = await self._channels()
        name = self._member_queue(group, channel)
        async with self._guard(f"discard {channel!r} from group {group!r}"):
            await pub.queue_delete(name, timeout=self.timeout)
        self._members.discard(name)

    async def _group_send(self, group: str, data: bytes) -> None:
        await self._ensure_exchange()
        result = await self._publish(
            self.exchange_name, group, data, what=f"send to group {group!r}", persistent=self.durable,
            headers={"o": self.process_id},
        )
        if result == "nack":
            self.dropped += 1  # a member's queue was full: it misses this message (Channels semantics)
        # the copy the exchange routes back to our own inbox is skipped by ``_inbox_entry``: the
        # base serves this process's members

    async def _flush(self) -> None:
        """Delete what this layer declared; a failed step does not stop the others (raised at the end)."""
        if self._connection is None:
            return
        pub, sub, _ = await self._channels()
        failures: list[BrokerUnavailable] = []

        async def attempt(channel: AbstractRobustChannel, what: str, step: Callable[[], Awaitable[object]]) -> None:
            try:
                async with self._guard(what):
                    await step()
            except BrokerUnavailable as exc:
                failures.append(exc)
                with contextlib.suppress(BrokerUnavailable):
                    await self._reopened(channel, what)  # if the error closed the channel

        for channel in list(self._consumers):
            await self._stop_consumer(channel)
        inbox = self._inbox
        if inbox is not None:
            for group in list(self._joined):
                with contextlib.suppress(BrokerUnavailable):
                    await self._group_leave(group)
            await attempt(sub, "purge the inbox", lambda: inbox.purge(timeout=self.timeout))
        for name in sorted(self._members | self._declared):
            delete = functools.partial(pub.queue_delete, name, timeout=self.timeout)
            await attempt(pub, f"delete queue {name!r}", delete)
        self._members.clear()
        self._declared.clear()
        self._exchange_ready = False
        await attempt(
            sub, f"delete exchange {self.exchange_name!r}",
            lambda: sub.exchange_delete(self.exchange_name, timeout=self.timeout),
        )
        if failures:
            raise failures[0]

    async def _close(self) -> None:
        await cancel_and_wait([self._reaper, self._acker])
        connection, self._connection = self._connection, None
        self._consumers.clear()
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), self.timeout)
