"""This process's inbox: an exclusive queue (it dies with the connection), consumed for good.

Group messages arrive from the exchange (routing key = group), channel messages with header ``c``
or dead-lettered from a membership queue. Deliveries are acked in batches: one ``multiple`` ack per
burst. Inbox messages are transient: those queued at the instant the connection drops are lost,
like the process-local channels themselves would be if the process died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .connection import RabbitMQConnection
from .queues import QueueNames, text

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage, AbstractRobustQueue

logger = logging.getLogger("app.channels.rabbitmq")

#: Builds the base layer's inbox entry: (group, data) for a group message, (channel, data) else.
Entry = Callable[[str, bytes], bytes]


class Inbox:
    """Declares the inbox once (``ensure``), then feeds its deliveries to the base (``consume``)."""

    def __init__(self, conn: RabbitMQConnection, name: str, capacity: int, process_id: str, exchange: str) -> None:
        self.conn = conn
        self.name = name
        self.capacity = capacity
        self.process_id = process_id
        self.exchange = exchange
        self.queue: AbstractRobustQueue | None = None
        self._lock = asyncio.Lock()
        self._tag: str | None = None
        self._ack_latest: AbstractIncomingMessage | None = None
        self._acker: asyncio.Task[None] | None = None

    async def ensure(self) -> AbstractRobustQueue:
        if self.queue is not None:
            return self.queue
        async with self._lock:
            if self.queue is None:
                _, sub, _ = await self.conn.channels()
                async with self.conn.guard("declare this process's inbox"):
                    self.queue = await sub.declare_queue(
                        self.name,
                        exclusive=True,
                        arguments={"x-max-length": self.capacity, "x-overflow": "reject-publish"},
                        timeout=self.conn.timeout,
                    )
            return self.queue

    async def consume(self, deliver: Callable[[bytes], None], group_entry: Entry, channel_entry: Entry,
                      on_drop: Callable[[], None]) -> None:
        """Hand every delivery to ``deliver``, forever (the base cancels it on close)."""
        inbox = await self.ensure()
        if self._tag is None:

            async def on_message(message: AbstractIncomingMessage) -> None:
                entry = self._entry(message, group_entry, channel_entry)
                if entry is None:
                    logger.warning("dropping an inbox message for no channel or group (headers %r)", message.headers)
                    on_drop()
                elif entry:
                    deliver(entry)
                self._ack_latest = message
                if self._acker is None or self._acker.done():
                    self._acker = asyncio.get_running_loop().create_task(self._ack())

            async with self.conn.guard("consume this process's inbox"):
                # robust: aio-pika consumes again on its own after a reconnect
                self._tag = await inbox.consume(on_message, timeout=self.conn.timeout)
        await asyncio.Future()

    async def _ack(self) -> None:
        """Ack delivered inbox messages in batches (one ``multiple`` ack for a burst of deliveries)."""
        while self._ack_latest is not None:
            for _ in range(3):  # let the rest of this burst reach on_message first
                await asyncio.sleep(0)
            message, self._ack_latest = self._ack_latest, None
            with contextlib.suppress(Exception):  # a closed channel: the broker dropped the ack state anyway
                await asyncio.wait_for(message.ack(multiple=True), self.conn.timeout)

    def _entry(self, message: AbstractIncomingMessage, group_entry: Entry, channel_entry: Entry) -> bytes | None:
        """The base's inbox entry for a delivered message; ``b""``: skip it, None: not understood."""
        headers = message.headers or {}
        if message.exchange == self.exchange and message.routing_key:
            if text(headers.get("o")) == self.process_id:
                return b""  # sent by this process, which delivered it to its members already
            return group_entry(message.routing_key, message.body)
        channel = text(headers.get("c"))
        if channel is None:  # dead-lettered from a membership queue ``Q.member.<group>/<channel>``
            channel = QueueNames.member_channel(text(headers.get("x-first-death-queue")) or "")
        return None if channel is None else channel_entry(channel, message.body)

    @property
    def acker(self) -> asyncio.Task[None] | None:
        return self._acker
