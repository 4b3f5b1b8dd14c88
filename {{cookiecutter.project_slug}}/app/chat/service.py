"""One worker process's chat state: its layer, presence, history and open connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any, Protocol

from ..channels import BaseChannelLayer, get_channel_layer_from_env
from ..channels.config import config_from_env
from ..metrics import LAYER_SEND, FrameCounter
from ..settings import Settings
from .history import History, make_history
from .presence import Presence
from .protocol import room_group, user_group
from .recent import Recent

logger = logging.getLogger(__name__)


class Connection(Protocol):
    """What the service needs of an open socket (the consumer), so service does not import consumer."""

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class ChatService:
    def __init__(self, settings: Settings, layer: BaseChannelLayer, history: History) -> None:
        self.settings = settings
        self.layer = layer
        self.history = history
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.presence = Presence(layer, self.worker_id, settings.presence_interval_seconds)
        self.connections: set[Connection] = set()
        self.encoded = Recent()  # message id -> frame text, encoded once for all receivers here

    @classmethod
    async def start(cls, settings: Settings) -> ChatService:
        layer = get_channel_layer_from_env()
        backend = str(config_from_env()["BACKEND"]).lower()
        service = cls(settings, layer, make_history(backend, settings.history_size, dict(os.environ)))
        await service.presence.start()
        return service

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
        await self.history.close()
        await self.layer.close()
        FrameCounter.flush_all()

    async def post_message(self, room: str, sender: str, text: str) -> dict[str, Any]:
        message = {"type": "chat.message", "id": uuid.uuid4().hex, "room": room, "from": sender,
                   "text": text, "ts": time.time()}
        await self.group_send(room_group(room), message)
        try:  # history is best effort: a slow or failing store never costs the live message
            await self.history.on_sent(room, message)
        except Exception as exc:
            logger.warning("history store failed for room %s: %s", room, exc)
        return message

    async def notify_user(self, user: str, sender: str, text: str) -> dict[str, Any]:
        message = {"type": "chat.direct", "id": uuid.uuid4().hex, "from": sender, "to": user,
                   "text": text, "ts": time.time()}
        await self.group_send(user_group(user), message)
        return message

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        with LAYER_SEND.time():
            await self.layer.group_send(group, message)
