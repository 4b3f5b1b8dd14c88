"""Publishing with the JetStream ack: every publish carries a ``Nats-Msg-Id`` and is retried.

A publish retried after a reconnect (bounded by ``message_timeout``) is deduplicated by the server,
so a retry never stores a message twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable

from ...exceptions import BrokerUnavailable, ChannelFull, ChannelLayerError
from .connection import NATSConnection
from .streams import Streams

logger = logging.getLogger("app.channels.nats")


class Publisher:
    """``publish()`` waits for the ack, across reconnects and leader elections, until ``timeout``."""

    def __init__(self, conn: NATSConnection, streams: Streams, process_id: str, timeout: float,
                 check_open: Callable[[], None]) -> None:
        self.conn = conn
        self.streams = streams
        self.process_id = process_id
        self.timeout = timeout
        self._check_open = check_open
        self._ids = itertools.count()

    def msg_id(self) -> str:
        return f"{self.process_id}.{next(self._ids)}"

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None,
                      *, retry: bool = True, channel: str | None = None, create: bool = True) -> int:
        """Publish and wait for the JetStream ack; return the stream sequence.

        Raises BrokerUnavailable after ``timeout``, ChannelFull when the subject is full. ``create``:
        re-create the streams once if none takes the subject (flushed by another layer).
        """
        js = await self.conn.connect()
        nc = self.conn.client
        errors, js_errors = self.conn.lib.errors, self.conn.lib.js_errors
        headers = {"Nats-Msg-Id": self.msg_id(), **(headers or {})}
        deadline = time.monotonic() + self.timeout
        ensured_again = False
        last: Exception | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (last is not None and not retry):
                raise BrokerUnavailable(
                    f"NATS did not acknowledge a publish to {subject!r} within {self.timeout}s: {last!r}"
                )
            if not nc.is_connected:
                self._check_open()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.conn.connected.wait(), min(remaining, 0.5))
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
                if not ensured_again:
                    self._check_open()
                    ensured_again = True
                    try:
                        await self.streams.ensure(force=True)
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
