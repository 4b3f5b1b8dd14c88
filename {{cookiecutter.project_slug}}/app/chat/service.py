"""One worker process's chat state: its layer, presence, message store and open connections.

Every room and direct message is stored (with its seq) before the layer fans it out; the layer
stays the live path, the store is what recovery, history and acks are read from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from typing import Any, Protocol

from ..channels import BaseChannelLayer, get_channel_layer_from_env
from ..db.engine import make_engine
from ..db.migrate import migrate
from ..messages.store import DIRECT, ROOM, MessageStore, Stored
from ..metrics import LAYER_SEND, FrameCounter, LayerDrops
from ..settings import Settings
from .presence import Presence
from .protocol import room_group, user_group
from .recent import Recent

logger = logging.getLogger(__name__)
PRUNE_INTERVAL_SECONDS = 3600.0
#: Handshakes and joins reading the store at once, per worker. In a reconnect storm thousands arrive
#: together; past the connection pool's size they would only queue inside it, where SQLAlchemy fails
#: them after its 30 s pool timeout. Here they wait their turn instead, in order.
STORE_GATE = 8


def room_message(stored: Stored) -> dict[str, Any]:
    """The layer message of a stored room message (``chat.message``)."""
    return {"type": "chat.message", "id": stored.id, "seq": stored.seq, "room": stored.stream, "from": stored.sender,
            "text": stored.text, "ts": stored.ts, "client_id": stored.client_id}


def direct_message(stored: Stored) -> dict[str, Any]:
    """The layer message of a stored direct message (``chat.direct``; ``seq`` counts the recipient's)."""
    return {"type": "chat.direct", "id": stored.id, "seq": stored.seq, "from": stored.sender, "to": stored.stream,
            "text": stored.text, "ts": stored.ts, "client_id": stored.client_id}


class Connection(Protocol):
    """What the service needs of an open socket (the consumer), so service does not import consumer."""

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class ChatService:
    def __init__(self, settings: Settings, layer: BaseChannelLayer, store: MessageStore) -> None:
        self.settings = settings
        self.layer = layer
        self.store = store
        self._pruner: asyncio.Task[None] | None = None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.presence = Presence(layer, self.worker_id, settings.presence_interval_seconds)
        self.connections: set[Connection] = set()
        self.encoded = Recent()  # message id -> frame text, encoded once for all receivers here
        self.store_gate = asyncio.Semaphore(STORE_GATE)

    @classmethod
    async def start(cls, settings: Settings) -> ChatService:
        url = settings.database_url.get_secret_value()
        await migrate(url)  # once for all workers starting together (app/db/migrate.py)
        store = MessageStore(make_engine(url))
        service = cls(settings, get_channel_layer_from_env(), store)
        LayerDrops.watch(service.layer)
        await service.presence.start()
        service._pruner = asyncio.create_task(service._prune_forever())
        return service

    async def _prune_forever(self) -> None:
        """Drop messages past APP_MESSAGE_RETENTION_DAYS, hourly (at a random offset per worker; on
        PostgreSQL an advisory lock lets one worker prune at a time, on SQLite the single writer does)."""
        await asyncio.sleep(random.uniform(0, 60))
        while True:
            try:
                cutoff = time.time() - self.settings.message_retention_days * 86400
                if pruned := await self.store.prune(cutoff):
                    logger.info("pruned %d messages older than %s days", pruned, self.settings.message_retention_days)
            except Exception as exc:
                logger.warning("message pruning failed: %s", type(exc).__name__)
            await asyncio.sleep(PRUNE_INTERVAL_SECONDS)

    async def stop_connections(self, close_code: int = 1001) -> None:
        """Close every socket (1001: going away) and wait until they have left their groups."""
        await asyncio.gather(*(c.close(close_code, "server shutting down") for c in list(self.connections)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while self.connections:  # noqa: ASYNC110 - each consumer removes itself after leaving its groups
                    await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.stop_connections()
        await self.presence.stop()
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        await self.store.close()
        await self.layer.close()
        FrameCounter.flush_all()

    async def post_message(self, room: str, sender: str, text: str,
                           client_id: str | None = None) -> tuple[dict[str, Any], bool]:
        """Store, then fan out; a resend of ``client_id`` (``True`` second) is only answered, not sent again."""
        stored = await self.store.add(ROOM, room, sender, text, client_id)
        message = room_message(stored)
        if not stored.duplicate:
            await self._fan_out(room_group(room), message)
        return message, stored.duplicate

    async def notify_user(self, user: str, sender: str, text: str,
                          client_id: str | None = None) -> tuple[dict[str, Any], bool]:
        """Store (kept for a user with no open socket: recovered with ``sync``), then fan out."""
        stored = await self.store.add(DIRECT, user, sender, text, client_id)
        message = direct_message(stored)
        if not stored.duplicate:
            await self._fan_out(user_group(user), message)
        return message, stored.duplicate

    async def _fan_out(self, group: str, message: dict[str, Any]) -> None:
        """The live path of a stored message. If the broker is down, the message is still stored (and acked):
        sockets fill the gap from the store at the room's next message, clients when they rejoin or sync."""
        try:
            await self.group_send(group, message)
        except Exception as exc:
            logger.warning("fan-out of stored message %s failed (%s): receivers catch up from the store",
                           message["id"], type(exc).__name__)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        with LAYER_SEND.time():
            await self.layer.group_send(group, message)
