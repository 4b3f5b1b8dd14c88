"""Named channels: durable queues, consumed only while a receive waits.

A receive takes a waiting message with ``basic.get``; if there is none it starts a consumer
(prefetch 1) on the channel's queue, takes one message, cancels the consumer and acks the message;
one the broker sent as the wait timed out goes back (nack, requeue). So this process
holds a named channel's message only while a receive waits for it: another process that waits gets
it at once, and ``capacity``, ``message_ttl`` and expiry hold for every message not handed out (the
broker keeps them). A message is acked when handed to the receiver: a connection lost between the
two may deliver it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import TYPE_CHECKING, Any, cast

from ...exceptions import BrokerUnavailable
from .connection import RabbitMQConnection
from .queues import QueueNames

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage, AbstractRobustQueue


class NamedChannels:
    """Declares named-channel queues (once per layer) and receives from them."""

    def __init__(self, conn: RabbitMQConnection, names: QueueNames, *, durable: bool, arguments: dict[str, Any],
                 tag_prefix: str) -> None:
        self.conn = conn
        self.names = names
        self.durable = durable
        self.arguments = arguments
        self.tag_prefix = tag_prefix
        self.declared: set[str] = set()  # queues this layer declared (flush deletes them)

    async def declare(self, channel: str, *, force: bool = False) -> str:
        name = self.names.channel(channel)
        if force or name not in self.declared:
            pub, _, _ = await self.conn.channels()
            async with self.conn.guard(f"declare channel {channel!r}"):
                await pub.declare_queue(
                    name, durable=self.durable, arguments=self.arguments, timeout=self.conn.timeout, robust=False
                )
            self.declared.add(name)
        return name

    async def receive(self, channel: str, wait: float) -> bytes | None:
        """One message of ``channel`` within ``wait`` seconds, or None."""
        errors = self.conn.lib.exceptions
        name = await self.declare(channel)
        _, _, named = await self.conn.channels()
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        stopped = False

        async def on_message(message: AbstractIncomingMessage) -> None:
            if stopped:  # sent before our cancel reached the broker: give it back
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(message.nack(requeue=True), self.conn.timeout)
            else:
                arrived.put_nowait(message)

        tag = f"{self.tag_prefix}.{secrets.token_hex(6)}"
        queue = cast("AbstractRobustQueue", await named.get_queue(name, ensure=False))
        what = f"consume channel {channel!r}"
        try:
            async with self.conn.guard(what):
                # one waiting already (a backlog): basic.get, one round trip
                waiting = await queue.get(no_ack=False, fail=False, timeout=self.conn.timeout)
                if waiting is None:
                    # not robust: a consumer lives for one receive, aio-pika must not restore it
                    await queue.consume(on_message, consumer_tag=tag, timeout=self.conn.timeout, robust=False)
        except BrokerUnavailable as exc:
            if not isinstance(exc.__cause__, errors.ChannelNotFoundEntity):
                raise
            self.declared.discard(name)  # deleted by another layer's flush: declare it again next time
            await self.conn.reopened(named, what)
            return None
        if waiting is not None:
            return await self._ack(channel, waiting)
        message: AbstractIncomingMessage | None = None
        try:
            async with asyncio.timeout(wait):
                message = await arrived.get()
        except TimeoutError:
            pass
        finally:
            # cancelled BEFORE the ack: while the message is unacked, prefetch 1 keeps the next one on
            # the broker, so nothing is requeued out of order (a quorum queue requeues at the back)
            stopped = True
            with contextlib.suppress(Exception):  # on a closed channel the broker requeued everything
                await asyncio.wait_for(queue.cancel(tag), self.conn.timeout)
            while not arrived.empty():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(arrived.get_nowait().nack(requeue=True), self.conn.timeout)
        return None if message is None else await self._ack(channel, message)

    async def _ack(self, channel: str, message: AbstractIncomingMessage) -> bytes:
        async with self.conn.guard(f"ack a message of {channel!r}"):
            await message.ack()  # if its channel died meanwhile, the broker requeued it
        return message.body
