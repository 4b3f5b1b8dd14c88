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
        self._lock = asyncio.Lock()

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
        """The JetStream context, connecting on first use."""
        if self.js is not None:
            return self.js
        async with self._lock:
            if self.js is not None:
                return self.js
            self._check_open()
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
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await nc.close()
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
        nc, self.nc, self.js = self.nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), self.timeout)
