"""The RabbitMQ layer (aio-pika): RabbitMQ routes and fans out, the process delivers locally.

Broker objects, for ``queue_prefix`` Q (default: ``prefix``) and ``exchange_name`` X
(default: ``<prefix>.groups``, a direct exchange); names in ``queues.py``:

* ``Q.inbox.<process>``: this process's inbox, an *exclusive* queue (``inbox.py``): it dies with
  the connection, so a dead process's group memberships vanish at once: that is the lease, and
  ``_group_refresh`` has nothing to do. Joining a group binds it to X with the group name as
  routing key, leaving unbinds it, so ``group_send`` is ONE publish to X and RabbitMQ copies it
  once per member process.
* ``Q.channel.<name>``: a named channel (``named.py``), a durable queue (quorum with
  ``quorum=True``) with ``x-max-length=capacity`` and ``x-overflow=reject-publish``: a full channel
  nacks the publish, which ``send`` raises as ``ChannelFull``. (A quorum queue applies the limit
  asynchronously, so concurrent sends that race it may overshoot it a little.)
* ``Q.member.<group>/<channel>``: a named channel (or another process's channel) added to a
  group. It is bound to X, holds nothing (``x-message-ttl=0``) and dead-letters each message into
  the channel's queue (or the owner's inbox); its ``x-expires`` is ``group_expiry``, so RabbitMQ
  itself deletes the membership (and its binding) when it is not re-added in time, even if every
  process that added it died.

A group message also reaches the sender's own members at once, in process (like a local send);
the copy the exchange routes back to the sender's inbox carries its process id in header ``o`` and
is skipped. ``new_channel`` declares the inbox before returning a name, so a message sent to it
right away cannot be unroutable. Every publish waits for its confirm (``publish.py``) and carries
``expiration`` = ``expiry``. Confirmed messages to named channels survive a broker restart when
``durable`` (persistent messages in durable queues).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ...base import BaseChannelLayer
from ...broker import BrokerEnv, require_positive
from ...exceptions import BrokerUnavailable, ChannelFull, ConfigurationError
from ...names import is_process_local, process_of
from ...tasks import cancel_and_wait
from .connection import RabbitMQConnection
from .inbox import Inbox
from .named import NamedChannels
from .publish import Publisher
from .queues import QueueNames, check_amqp_name, named_arguments

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection


class RabbitMQEnv(BrokerEnv):
    """``FASTAPI_WEBSOCKETS_RABBITMQ_*`` (an empty ``MESSAGE_TTL``/``QUEUE_EXPIRY`` disables it)."""

    url: str | None = None
    exchange_name: str | None = None
    queue_prefix: str | None = None
    durable: bool | None = None
    message_ttl: int | None = None
    queue_expiry: int | None = None
    poll_interval: float | None = None
    quorum: bool | None = None
    timeout: float | None = None


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
        if message_ttl is not None and message_ttl < 0:
            raise ConfigurationError(f"message_ttl must be a number of milliseconds >= 0 or None, got {message_ttl!r}")
        require_positive(queue_expiry=queue_expiry, timeout=timeout, poll_interval=poll_interval)
        self.url = url
        self.queue_prefix = check_amqp_name("queue_prefix", queue_prefix) or self.prefix
        self.exchange_name = check_amqp_name("exchange_name", exchange_name) or f"{self.prefix}.groups"
        self.durable = durable
        self.quorum = quorum
        self.message_ttl = message_ttl
        self.queue_expiry = queue_expiry
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self._names = QueueNames(self.queue_prefix)
        self.inbox_name = self._names.inbox(self.process_id)
        self._conn = RabbitMQConnection(url, f"{self.prefix} {self.process_id}", self.timeout, self.poll_interval,
                                        self._check_open)
        self._publisher = Publisher(self._conn, self.expiry, self._redeclare_exchange, lambda: self.closed)
        self._inbox = Inbox(self._conn, self.inbox_name, self.inbox_capacity, self.process_id, self.exchange_name)
        self._named = NamedChannels(self._conn, self._names, durable=durable, arguments=self._named_arguments(),
                                    tag_prefix=f"{self.prefix}.{self.process_id}")
        self._exchange_ready = False
        self._joined: set[str] = set()
        self._members: set[str] = set()  # membership queues this layer declared

    @property
    def _connection(self) -> AbstractRobustConnection | None:
        return self._conn.connection

    def _named_arguments(self) -> dict[str, Any]:
        return named_arguments(self.capacity, quorum=self.quorum, message_ttl=self.message_ttl,
                               queue_expiry=self.queue_expiry)

    # ------------------------------------------------------------------ the exchange

    async def _ensure_exchange(self) -> None:
        if self._exchange_ready:
            return
        _, sub, _ = await self._conn.channels()
        async with self._conn.guard(f"declare exchange {self.exchange_name!r}"):
            # on the inbox channel, so aio-pika re-declares it before re-binding the inbox
            await sub.declare_exchange(self.exchange_name, "direct", durable=self.durable, timeout=self.timeout)
        self._exchange_ready = True

    async def _redeclare_exchange(self) -> None:
        """Another layer's flush deleted the exchange: declare it again."""
        self._exchange_ready = False
        await self._ensure_exchange()

    async def _bind(self, channel: AbstractRobustChannel, what: str, bind: Callable[[], Awaitable[object]]) -> None:
        """Bind to the exchange; if a flush elsewhere deleted it, declare it again and retry once."""
        errors = self._conn.lib.exceptions
        for attempt in range(2):
            await self._ensure_exchange()
            try:
                async with self._conn.guard(what):
                    await bind()
                return
            except BrokerUnavailable as exc:
                if attempt or not isinstance(exc.__cause__, errors.ChannelNotFoundEntity):
                    raise
                self._exchange_ready = False
                await self._conn.reopened(channel, what)

    # ------------------------------------------------------------------ broker primitives

    async def new_channel(self, prefix: str = "specific") -> str:
        """Declare the inbox before handing out a name, so a send to it cannot be dropped."""
        self._check_open()
        await self._inbox.ensure()
        return await super().new_channel(prefix)

    async def _send(self, channel: str, data: bytes) -> None:
        if is_process_local(channel):
            result = await self._publisher.publish(
                "", self._names.inbox(process_of(channel)), data, what=f"send to {channel!r}", headers={"c": channel},
                mandatory=True,
            )
            if result == "nack":
                raise ChannelFull(f"channel {channel!r} is full: its process inbox holds {self.inbox_capacity}")
            if result == "returned":
                self.dropped += 1  # its process is gone (its exclusive inbox died with it)
            return
        for attempt in range(2):
            name = await self._named.declare(channel, force=bool(attempt))
            result = await self._publisher.publish(
                "", name, data, what=f"send to {channel!r}", persistent=self.durable, mandatory=True
            )
            if result == "ack":
                return
            if result == "nack":
                raise ChannelFull(f"channel {channel!r} is full ({self.capacity} messages)")
            self._named.declared.discard(name)  # returned: the queue was deleted meanwhile; declare it again
        raise BrokerUnavailable(f"{self._conn.where}: channel {channel!r} has no queue even after declaring it")

    async def _receive(self, channel: str) -> bytes | None:
        return await self._named.receive(channel, self.receive_timeout)

    async def _consume_inbox(self, deliver: Callable[[bytes], None]) -> None:
        await self._inbox.consume(deliver, self._group_entry, self._channel_entry, self._count_drop)

    def _count_drop(self) -> None:
        self.dropped += 1

    async def _group_join(self, group: str) -> None:
        inbox = await self._inbox.ensure()
        _, sub, _ = await self._conn.channels()
        await self._bind(
            sub, f"join group {group!r}", lambda: inbox.bind(self.exchange_name, group, timeout=self.timeout)
        )
        self._joined.add(group)

    async def _group_leave(self, group: str) -> None:
        self._joined.discard(group)
        inbox = await self._inbox.ensure()
        errors = self._conn.lib.exceptions
        try:
            async with self._conn.guard(f"leave group {group!r}"):
                await inbox.unbind(self.exchange_name, group, timeout=self.timeout)
        except BrokerUnavailable as exc:
            if not isinstance(exc.__cause__, errors.ChannelNotFoundEntity):
                raise  # a missing exchange (flushed) has no binding left to remove

    async def _group_refresh(self, groups: list[str]) -> None:
        """Nothing to renew: the inbox is exclusive, so its bindings end with this process's connection."""

    async def _group_add_channel(self, group: str, channel: str) -> None:
        if is_process_local(channel):
            target = self._names.inbox(process_of(channel))
        else:
            target = await self._named.declare(channel)
        pub, _, _ = await self._conn.channels()
        name = self._names.member(group, channel)
        what = f"add {channel!r} to group {group!r}"
        async with self._conn.guard(what):
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
        pub, _, _ = await self._conn.channels()
        name = self._names.member(group, channel)
        async with self._conn.guard(f"discard {channel!r} from group {group!r}"):
            await pub.queue_delete(name, timeout=self.timeout)
        self._members.discard(name)

    async def _group_send(self, group: str, data: bytes) -> None:
        await self._ensure_exchange()
        result = await self._publisher.publish(
            self.exchange_name, group, data, what=f"send to group {group!r}", persistent=self.durable,
            headers={"o": self.process_id},
        )
        if result == "nack":
            self.dropped += 1  # a member's queue was full: it misses this message (Channels semantics)
        # the copy the exchange routes back to our own inbox is skipped by the inbox: the base serves
        # this process's members

    # ------------------------------------------------------------------ lifecycle

    async def _flush(self) -> None:
        """Delete what this layer declared; a failed step does not stop the others (raised at the end)."""
        if self._conn.connection is None:
            return
        pub, sub, _ = await self._conn.channels()
        failures: list[BrokerUnavailable] = []

        async def attempt(channel: AbstractRobustChannel, what: str, step: Callable[[], Awaitable[object]]) -> None:
            try:
                async with self._conn.guard(what):
                    await step()
            except BrokerUnavailable as exc:
                failures.append(exc)
                with contextlib.suppress(BrokerUnavailable):
                    await self._conn.reopened(channel, what)  # if the error closed the channel

        inbox = self._inbox.queue
        if inbox is not None:
            for group in list(self._joined):
                with contextlib.suppress(BrokerUnavailable):
                    await self._group_leave(group)
            await attempt(sub, "purge the inbox", lambda: inbox.purge(timeout=self.timeout))
        for name in sorted(self._members | self._named.declared):
            delete = functools.partial(pub.queue_delete, name, timeout=self.timeout)
            await attempt(pub, f"delete queue {name!r}", delete)
        self._members.clear()
        self._named.declared.clear()
        self._exchange_ready = False
        await attempt(
            sub, f"delete exchange {self.exchange_name!r}",
            lambda: sub.exchange_delete(self.exchange_name, timeout=self.timeout),
        )
        if failures:
            raise failures[0]

    async def _close(self) -> None:
        await cancel_and_wait([self._inbox.acker])
        await self._conn.close()
