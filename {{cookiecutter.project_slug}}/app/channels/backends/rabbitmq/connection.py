"""One robust aio-pika connection per layer with three AMQP channels, and error translation.

Channels: publishing (confirms), declares and deletes; the exchange and the inbox consumer; the
named-channel consumers (prefetch 1). aio-pika restores channels, the inbox queue, its bindings and
consumer after a reconnect. Every broker call is bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import TYPE_CHECKING, cast

from ...broker import broker_errors, redact_url
from ...exceptions import ConfigurationError
from .. import import_client

if TYPE_CHECKING:
    from aio_pika import RobustChannel
    from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection


def client() -> ModuleType:
    return import_client("aio_pika", "rabbitmq")


class RabbitMQConnection:
    """Connects on first use; ``guard()`` bounds a call and translates the client's errors."""

    def __init__(self, url: str, name: str, timeout: float, reconnect_interval: float,
                 check_open: Callable[[], None]) -> None:
        self.lib = client()
        self.url = url
        self.name = name
        self.timeout = timeout
        self.reconnect_interval = reconnect_interval
        self._check_open = check_open
        self._lock = asyncio.Lock()
        self.connection: AbstractRobustConnection | None = None
        self._channels: tuple[AbstractRobustChannel, AbstractRobustChannel, AbstractRobustChannel] | None = None

    @property
    def where(self) -> str:
        return f"RabbitMQ at {redact_url(self.url)}"

    @contextlib.asynccontextmanager
    async def guard(self, what: str) -> AsyncIterator[None]:
        """Bound a broker call by ``timeout``; client errors become BrokerUnavailable (the cause kept),
        a refused declaration a ConfigurationError."""
        errors = self.lib.exceptions
        with broker_errors(f"{self.where} ({what})", errors.AMQPError, errors.ChannelInvalidStateError,
                           ConnectionError):
            try:
                async with asyncio.timeout(self.timeout):
                    yield
            except TimeoutError:
                raise ConnectionError(f"{what} timed out after {self.timeout}s (broker down?)") from None
            except errors.ChannelPreconditionFailed as exc:
                raise ConfigurationError(
                    f"{self.where} refused to {what}: {exc}. A queue or exchange of that name exists with other"
                    " settings (capacity, durable, quorum, message_ttl, queue_expiry, group_expiry): use the same"
                    " CONFIG in every process, or another prefix"
                ) from exc

    async def channels(self) -> tuple[AbstractRobustChannel, AbstractRobustChannel, AbstractRobustChannel]:
        """``(publish, inbox, named)``, connecting on first use."""
        if self._channels is not None:
            return self._channels
        async with self._lock:
            if self._channels is not None:
                return self._channels
            self._check_open()
            aio_pika = self.lib
            # built here rather than by connect_robust(), so a connect that times out can be closed:
            # otherwise its reconnect loop would live on in the background
            from yarl import URL  # aio-pika's own dependency

            # aio-pika reads its options from the URL's query when given no keywords (with keywords, it
            # drops the query); aiormq names the connection after ``name``
            url = URL(self.url).update_query(reconnect_interval=self.reconnect_interval, name=self.name)
            connection: AbstractRobustConnection = aio_pika.RobustConnection(url)
            try:
                async with self.guard("connect"):
                    await connection.connect(timeout=self.timeout)
                async with self.guard("open channels"):
                    pub = connection.channel(publisher_confirms=True, on_return_raises=True)
                    await pub.initialize()
                    sub = connection.channel(publisher_confirms=False)
                    await sub.initialize()
                    await sub.set_qos(prefetch_count=512)
                    named = connection.channel(publisher_confirms=False)
                    await named.initialize()
                    await named.set_qos(prefetch_count=1)  # per consumer: one message per waiting receive
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), self.timeout)
                raise
            self.connection = connection
            self._channels = (pub, sub, named)
            return self._channels

    async def reopened(self, channel: AbstractRobustChannel, what: str) -> None:
        """Wait (bounded) until aio-pika reopened and restored a channel the broker closed."""
        async with self.guard(what):
            # aio-pika reopens it from a close callback that may not have run yet; it offers no
            # event for "closed, then reopened", so poll briefly (bounded by the guard)
            while channel.is_closed:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await cast("RobustChannel", channel).ready()  # the ABC lacks ready() since aio-pika 9.6

    async def close(self) -> None:
        """Close the connection; returns once the broker saw it closed."""
        connection, self.connection, self._channels = self.connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), self.timeout)
