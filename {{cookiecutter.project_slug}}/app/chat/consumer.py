"""One chat connection: authenticates, enforces limits, speaks the protocol in protocol.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import urlsplit

from ..channels.consumer import AsyncJsonWebSocketConsumer
from ..metrics import CONNECTIONS, ERRORS, FRAMES_IN, FRAMES_OUT
from .auth import InvalidToken, verify_token
from .limits import TokenBucket
from .presence import PresenceChange
from .protocol import (
    Direct,
    InvalidFrame,
    Join,
    Leave,
    ListRooms,
    Ping,
    Say,
    Share,
    Typing,
    Who,
    announcement_frame,
    direct_frame,
    direct_sent_frame,
    error_frame,
    joined_frame,
    left_frame,
    members_frame,
    message_frame,
    parse_client_frame,
    pong_frame,
    presence_frame,
    room_group,
    rooms_frame,
    share_frame,
    typing_frame,
    user_group,
    welcome_frame,
)
from .recent import Recent
from .service import ChatService

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_IDLE = 4408
MAX_ROOMS_PER_CONNECTION = 20


class ChatConsumer(AsyncJsonWebSocketConsumer):
    def __init__(self, service: ChatService) -> None:
        self.send_queue_size = service.settings.send_queue_size  # type: ignore[misc]
        self.batch_frames = service.settings.send_batch_frames  # type: ignore[misc]
        super().__init__(service.layer)
        self.service = service
        self.settings = service.settings
        self.user: str | None = None
        self.rooms: set[str] = set()
        self.pending_share: tuple[str, str] | None = None
        self.bucket = TokenBucket(self.settings.rate_limit_per_second, self.settings.rate_limit_burst)
        self.strikes = 0
        self.last_seen = time.monotonic()
        self._idle_task: asyncio.Task[None] | None = None
        self.delivered_jobs = Recent()  # job messages are delivered at least once: drop repeats

    # ------------------------------------------------------------------ connection

    async def connect(self) -> None:
        origin = self.websocket.headers.get("origin")
        if origin and not self._origin_allowed(origin):
            await self._refuse("origin", f"origin {origin} is not allowed")
            return
        try:
            user = verify_token(self.settings, self.query_params.get("token"))
        except InvalidToken as exc:
            await self._refuse("token", str(exc))
            return
        await self.accept()
        self.user = user
        await self.group_add(user_group(user))
        self.service.connections.add(self)
        CONNECTIONS.inc()
        self._idle_task = asyncio.create_task(self._drop_when_idle())
        await self.send_json(welcome_frame(user, self.service.worker_id, self.settings.history_size))

    async def disconnect(self, code: int) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
        if self.user is None or self not in self.service.connections:
            return
        self.service.connections.discard(self)
        CONNECTIONS.dec()
        for room in list(self.rooms):
            self.service.presence.unwatch(room, self._presence_changed)
            with contextlib.suppress(Exception):
                await self.service.presence.leave(room, self.user)

    def _origin_allowed(self, origin: str) -> bool:
        origin = origin.rstrip("/")
        if self.settings.allowed_origins:
            return origin in self.settings.allowed_origins
        return urlsplit(origin).netloc == self.websocket.headers.get("host")

    async def _refuse(self, what: str, reason: str) -> None:
        """Accept, then close with 1008, so the page can read why (a refused handshake says nothing)."""
        ERRORS.labels(code=f"refused_{what}").inc()
        await self.accept()
        await self.close(CLOSE_POLICY, reason)

    async def _drop_when_idle(self) -> None:
        timeout = self.settings.idle_timeout_seconds
        while True:
            await asyncio.sleep(timeout / 4)
            if time.monotonic() - self.last_seen > timeout:
                ERRORS.labels(code="idle").inc()
                await self.close(CLOSE_IDLE, "idle timeout")
                return

    # ------------------------------------------------------------------ client frames

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.user is None:
            return
        self.last_seen = time.monotonic()
        size = len(bytes_data) if bytes_data is not None else len((text_data or "").encode())
        limit = self.settings.max_binary_frame_bytes if bytes_data is not None else self.settings.max_text_frame_bytes
        if size > limit:
            ERRORS.labels(code="too_big").inc()
            await self.close(CLOSE_TOO_BIG, f"frame of {size} bytes is over the {limit}-byte limit")
            return
        if not self.bucket.allow():
            # One error frame per flood (answering each frame would amplify it); a long flood closes.
            ERRORS.labels(code="rate_limited").inc()
            self.strikes += 1
            if self.strikes == 1:
                await self.send_json(error_frame("rate_limited", "too many frames; slow down"))
            elif self.strikes > self.settings.rate_limit_burst:
                await self.close(CLOSE_POLICY, "rate limit exceeded")
            return
        self.strikes = 0
        await super().receive(text_data=text_data, bytes_data=bytes_data)

    async def invalid_json(self, error: str) -> None:
        ERRORS.labels(code="invalid_json").inc()
        await self.send_json(error_frame("invalid_json", f"frame is not JSON: {error}"))

    async def receive_json(self, content: Any) -> None:
        try:
            frame = parse_client_frame(content)
        except InvalidFrame as exc:
            ERRORS.labels(code="invalid_frame").inc()
            await self.send_json(error_frame("invalid_frame", str(exc)))
            return
        FRAMES_IN.inc(frame.type)
        await getattr(self, f"on_{frame.type}")(frame)

    async def receive_bytes(self, bytes_data: bytes) -> None:
        FRAMES_IN.inc("binary")
        if self.pending_share is None:
            await self.send_json(error_frame("unexpected_binary", 'send a {"type": "share"} frame before binary data'))
            return
        room, mime = self.pending_share
        self.pending_share = None
        await self.service.group_send(room_group(room), {"type": "chat.share", "room": room, "from": self.user,
                                                         "mime": mime, "data": bytes_data})

    async def on_join(self, frame: Join) -> None:
        room = frame.room
        if room not in self.rooms:
            if len(self.rooms) >= MAX_ROOMS_PER_CONNECTION:
                detail = f"leave a room first (limit {MAX_ROOMS_PER_CONNECTION})"
                await self.send_json(error_frame("too_many_rooms", detail))
                return
            await self.group_add(room_group(room))
            self.rooms.add(room)
            self.service.presence.watch(room, self._presence_changed)
            await self.service.presence.join(room, self.user or "")
        history = [message_frame(m) for m in await self.service.history.recent(room)]
        await self.send_json(joined_frame(room, sorted(self.service.presence.members(room)), history))

    async def on_leave(self, frame: Leave) -> None:
        room = frame.room
        if room in self.rooms:
            self.rooms.discard(room)
            await self.group_discard(room_group(room))
            self.service.presence.unwatch(room, self._presence_changed)
            await self.service.presence.leave(room, self.user or "")
        await self.send_json(left_frame(room))

    async def on_message(self, frame: Say) -> None:
        if await self._in_room(frame.room):
            await self.service.post_message(frame.room, self.user or "", frame.text)

    async def on_typing(self, frame: Typing) -> None:
        if await self._in_room(frame.room):
            await self.service.group_send(room_group(frame.room), {
                "type": "chat.typing", "room": frame.room, "from": self.user, "typing": frame.typing})

    async def on_direct(self, frame: Direct) -> None:
        message = await self.service.notify_user(frame.to, self.user or "", frame.text)
        await self.send_json(direct_sent_frame(message))

    async def on_rooms(self, frame: ListRooms) -> None:
        await self.send_json(rooms_frame(self.service.presence.rooms()))

    async def on_who(self, frame: Who) -> None:
        await self.send_json(members_frame(frame.room, sorted(self.service.presence.members(frame.room))))

    async def on_ping(self, frame: Ping) -> None:
        await self.send_json(pong_frame())

    async def on_share(self, frame: Share) -> None:
        if await self._in_room(frame.room):
            self.pending_share = (frame.room, frame.mime)

    async def _in_room(self, room: str) -> bool:
        if room in self.rooms:
            return True
        await self.send_json(error_frame("not_in_room", f"join room {room!r} first"))
        return False

    # ------------------------------------------------------------------ layer messages

    async def chat_message(self, message: dict[str, Any]) -> None:
        self.service.history.on_delivered(message["room"], message)
        # every member of the room in this process gets the same text: encode it once
        text = self.service.encoded.get_or_make(message["id"], lambda: self.encode_json(message_frame(message)))
        FRAMES_OUT.inc("message")
        await self.send(text_data=text)

    async def chat_typing(self, message: dict[str, Any]) -> None:
        if message["from"] != self.user:
            await self.send_json(typing_frame(message))

    async def chat_direct(self, message: dict[str, Any]) -> None:
        if not self.delivered_jobs.first_time(("direct", message["id"], message["to"])):
            return
        await self.send_json(direct_frame(message))

    async def chat_share(self, message: dict[str, Any]) -> None:
        await self.send_json(share_frame(message))
        await self.send(bytes_data=message["data"])

    async def chat_announcement(self, message: dict[str, Any]) -> None:
        job_id = message.get("id")
        if job_id is not None and not self.delivered_jobs.first_time(("announcement", job_id, message.get("room"))):
            return
        await self.send_json(announcement_frame(message))

    async def _presence_changed(self, change: PresenceChange) -> None:
        text = self.service.encoded.get_or_make(change, lambda: self.encode_json(presence_frame(change)))
        FRAMES_OUT.inc("presence")
        await self.send(text_data=text)

    async def send_json(self, content: Any) -> None:
        FRAMES_OUT.inc(str(content.get("type", "?")) if isinstance(content, dict) else "?")
        await super().send_json(content)
