"""Publishing with publisher confirms: every publish waits for the broker's ack, nack or return."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from ...exceptions import BrokerUnavailable
from .connection import RabbitMQConnection

Outcome = Literal["ack", "nack", "returned"]


class Publisher:
    """``publish()`` answers ``"ack"``, ``"nack"`` (a queue was full) or ``"returned"`` (unroutable)."""

    def __init__(self, conn: RabbitMQConnection, expiry: float, redeclare_exchange: Callable[[], Awaitable[None]],
                 is_closed: Callable[[], bool]) -> None:
        self.conn = conn
        self.expiration = str(max(1, int(expiry * 1000)))
        self._redeclare_exchange = redeclare_exchange
        self._is_closed = is_closed

    async def publish(
        self, exchange: str, routing_key: str, data: bytes, *, what: str, headers: dict[str, Any] | None = None,
        persistent: bool = False, mandatory: bool = False,
    ) -> Outcome:
        """Publish (``expiration`` = the layer's expiry) and wait for the confirm; retried once after the
        publishing channel was closed, or the exchange deleted by another layer's flush."""
        from pamqp.commands import Basic

        errors = self.conn.lib.exceptions
        properties = Basic.Properties(
            delivery_mode=2 if persistent else 1, expiration=self.expiration, headers=headers
        )
        pub, _, _ = await self.conn.channels()
        for attempt in range(2):
            try:
                async with self.conn.guard(what):
                    try:
                        channel = await pub.get_underlay_channel()
                        await channel.basic_publish(
                            data, exchange=exchange, routing_key=routing_key, properties=properties,
                            mandatory=mandatory, timeout=self.conn.timeout,
                        )
                        return "ack"
                    except errors.PublishError:
                        return "returned"
                    except errors.DeliveryError:
                        return "nack"
            except BrokerUnavailable as exc:
                cause = exc.__cause__
                if attempt or self._is_closed():
                    raise
                if isinstance(cause, errors.ChannelNotFoundEntity) and exchange:
                    await self._redeclare_exchange()
                elif isinstance(cause, (errors.ChannelClosed, errors.ChannelInvalidStateError)):
                    await self.conn.reopened(pub, what)
                else:
                    raise
        raise AssertionError("unreachable")
