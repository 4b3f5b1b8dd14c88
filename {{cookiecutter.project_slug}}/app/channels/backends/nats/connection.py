"""One nats-py connection per layer, opened on first use; nats-py reconnects on its own afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ...broker import redact_url
from ...exceptions import BrokerUnavailable
from .. import import_client

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

logger = logging.getLogger("app.channels.nats")


@dataclass(frozen=True)
class Lib:
    """nats-py's modules, imported when a layer is made (a missing extra is ``BackendNotInstalled``)."""

    nats: ModuleType
    api: ModuleType
    errors: ModuleType
    js_errors: ModuleType

    @classmethod
    def load(cls) -> Lib:
        return cls(*(import_client(name, "nats") for name in ("nats", "nats.js.api", "nats.errors", "nats.js.errors")))


class NATSConnection:
    """The client and its JetStream context; ``connected`` is clear while nats-py reconnects."""

    def __init__(self, servers: list[str], name: str, timeout: float, check_open: Callable[[], None],
                 is_closed: Callable[[], bool]) -> None:
        self.lib = Lib.load()
        self.servers = servers
        self.name = name
        self.timeout = timeout
        self._check_open = check_open
        self._is_closed = is_closed
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.connected = asyncio.Event()
        self._attempt: asyncio.Future[JetStreamContext] | None = None

    @property
    def where(self) -> str:
        """The servers, without passwords, for error messages."""
        return ", ".join(redact_url(server) for server in self.servers)

    @property
    def client(self) -> Client:
        """The client of an open connection (call ``connect()`` first)."""
        assert self.nc is not None, "connect() first"
        return self.nc

    async def connect(self) -> JetStreamContext:
        """The JetStream context, connecting on first use.

        Callers that come while an attempt runs share it, its failure included: queued one after
        another, each waited for the attempts before its own (``timeout`` each), so during an outage
        a send or /readyz answered after 15-20 s instead of ``timeout``.
        """
        if self.js is not None:
            return self.js
        attempt = self._attempt
        if attempt is None:
            self._check_open()
            attempt = self._attempt = asyncio.ensure_future(self._connect())
            attempt.add_done_callback(self._attempt_done)
        try:
            return await asyncio.shield(attempt)  # a caller that leaves does not end it for the others
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if attempt.cancelled() and task is not None and not task.cancelling():
                self._check_open()  # close() ended the attempt: LayerClosed, not a cancel of this caller
            raise

    def _attempt_done(self, attempt: asyncio.Future[JetStreamContext]) -> None:
        self._attempt = None
        if not attempt.cancelled():
            attempt.exception()  # retrieved: a failure whose callers all left is no news

    async def _connect(self) -> JetStreamContext:
        nc: Client = self.lib.nats.NATS()

        async def on_error(exc: Exception) -> None:
            logger.debug("NATS error: %s", exc)

        async def on_disconnect() -> None:
            self.connected.clear()
            if not self._is_closed():
                logger.warning("NATS connection lost; reconnecting")

        async def on_reconnect() -> None:
            self.connected.set()
            logger.info("NATS reconnected to %s", nc.connected_url.hostname if nc.connected_url else "?")

        try:
            await asyncio.wait_for(nc.connect(
                servers=self.servers, name=self.name,
                allow_reconnect=True, max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,  # type: ignore[arg-type]  # annotated int, used as seconds
                connect_timeout=2, ping_interval=5, max_outstanding_pings=2,
                error_cb=on_error, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
            ), self.timeout)
        except BaseException as exc:  # cancelled too (close()): the half-made client goes
            with contextlib.suppress(Exception):
                await nc.close()
            if not isinstance(exc, Exception):
                raise
            raise BrokerUnavailable(f"cannot connect to NATS at {self.where}: {type(exc).__name__}") from exc
        self.connected.set()
        self.nc = nc
        self.js = nc.jetstream(timeout=min(self.timeout, 5.0))
        return self.js

    async def request_json(self, subject: str, body: dict[str, Any] | None = None, wait: float = 2.0) -> Any:
        """A JetStream API request; the decoded answer."""
        await self.connect()
        msg = await self.client.request(subject, json.dumps(body or {}).encode(), timeout=wait)
        return json.loads(msg.data) if msg.data else {}

    async def delete_consumer(self, stream: str, consumer: str) -> None:
        with contextlib.suppress(Exception):
            await self.request_json(f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}", wait=1.0)

    async def close(self) -> None:
        """Close the client; returns once its socket is closed."""
        if self._attempt is not None:  # an attempt that succeeded now would leave a client open
            self._attempt.cancel()
            await asyncio.wait({self._attempt})
        nc, self.nc, self.js = self.nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), self.timeout)
