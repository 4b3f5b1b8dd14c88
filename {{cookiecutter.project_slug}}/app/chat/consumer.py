"""One chat connection speaking the protocol of protocol.py: rooms, messages in seq order with recovery,
direct messages, presence, typing, shares. Who gets this far (auth, limits, timers): gate.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ..accounts.accounts import Accounts
from ..accounts.rooms import Forbidden, RoomAccess
from ..messages.store import DIRECT, ROOM
from ..metrics import ERRORS, FRAMES_IN, FRAMES_OUT
from .feed import Feed
from .gate import CLOSE_LIMIT, GatedConsumer
from .limits import AddressRate, image_matches
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
    Sync,
    Typing,
    Who,
    ack_frame,
    announcement_frame,
    direct_frame,
    direct_sent_frame,
    directs_frame,
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
)
from .recent import Recent
from .service import ChatService, direct_message, room_message

GAP_WAIT_SECONDS = 0.5
logger = logging.getLogger(__name__)


class ChatConsumer(GatedConsumer):
    __slots__ = ("_delivered_jobs", "_fills", "access", "direct_feed", "feeds", "pending_share", "rooms",
                 "shared_bytes")

    def __init__(self, service: ChatService, accounts: Accounts, access: RoomAccess, handshakes: AddressRate) -> None:
        super().__init__(service, accounts, handshakes)
        self.access = access
        self.shared_bytes = 0
        self.rooms: set[str] = set()
        self.pending_share: tuple[str, str] | None = None
        self._delivered_jobs: Recent | None = None  # job messages are delivered at least once: drop repeats
        self.feeds: dict[str, Feed] = {}  # per room: its messages in seq order, each once (feed.py)
        self.direct_feed = Feed()
        self._fills: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ connection

    async def disconnect(self, code: int) -> None:
        for task in self._fills.values():
            task.cancel()
        counted = self.user is not None and self in self.service.connections
        await super().disconnect(code)
        if counted and self.user is not None:
            for room in list(self.rooms):
                self.service.presence.unwatch(room, self._presence_changed)
                with contextlib.suppress(Exception):
                    await self.service.presence.leave(room, self.user)

    @property
    def delivered_jobs(self) -> Recent:
        if self._delivered_jobs is None:
            self._delivered_jobs = Recent()
        return self._delivered_jobs

    # ------------------------------------------------------------------ client frames

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
        self.shared_bytes += len(bytes_data)
        if self.shared_bytes > self.settings.share_budget_bytes:
            ERRORS.labels(code="share_budget").inc()
            await self.close(CLOSE_LIMIT, f"share budget of {self.settings.share_budget_bytes} bytes used up")
            return
        if not image_matches(mime, bytes_data):
            await self.send_json(error_frame("bad_image", f"the data is not a {mime} image"))
            return
        await self.service.group_send(room_group(room), {"type": "chat.share", "room": room, "from": self.user,
                                                         "mime": mime, "data": bytes_data})

    async def on_join(self, frame: Join) -> None:
        async with self.store_turn() as present:
            if present:
                await self._join(frame)

    async def _join(self, frame: Join) -> None:
        room = frame.room
        if not await self._may_enter(room):
            return
        if room not in self.rooms:
            limit = self.settings.max_rooms_per_user
            if len(self.service.presence.rooms_of(self.user or "") | self.rooms) >= limit:
                await self.send_json(error_frame("too_many_rooms", f"leave a room first (limit {limit} per user)"))
                return
            self.feeds[room] = Feed()
            self.feeds[room].recovering()  # before group_add: live messages wait for the store read
            await self.group_add(room_group(room))
            self.rooms.add(room)
            self.service.presence.watch(room, self._presence_changed)
            await self.service.presence.join(room, self.user or "")
        feed = self.feeds[room]
        feed.recovering()
        stored, last, recovered = await self.service.store.recover(
            ROOM, room, frame.since, self.settings.history_size, self.settings.recovery_limit)
        history = [message_frame(room_message(m)) for m in stored]
        members, count = self.service.presence.member_view(room, self.settings.member_list_limit)
        await self.send_json(joined_frame(room, members, count, history, last, recovered))
        for message in feed.start(last):  # live ones that came during the read, after it
            await self._send_message(message)

    async def on_leave(self, frame: Leave) -> None:
        room = frame.room
        if room in self.rooms:
            self.rooms.discard(room)
            self.feeds.pop(room, None)
            await self.group_discard(room_group(room))
            self.service.presence.unwatch(room, self._presence_changed)
            await self.service.presence.leave(room, self.user or "")
        await self.send_json(left_frame(room))

    async def on_message(self, frame: Say) -> None:
        if not await self._in_room(frame.room, frame.client_id):
            return
        try:
            message, _ = await self.service.post_message(frame.room, self.user or "", frame.text, frame.client_id)
        except Exception as exc:  # the store is down: the client keeps the message and resends it
            await self._not_stored(exc, frame.client_id)
            return
        if frame.client_id is not None:
            await self.send_json(ack_frame(message))

    async def on_typing(self, frame: Typing) -> None:
        if await self._in_room(frame.room):
            await self.service.group_send(room_group(frame.room), {
                "type": "chat.typing", "room": frame.room, "from": self.user, "typing": frame.typing})

    async def on_direct(self, frame: Direct) -> None:
        try:
            message, _ = await self.service.notify_user(frame.to, self.user or "", frame.text, frame.client_id)
        except Exception as exc:
            await self._not_stored(exc, frame.client_id)
            return
        await self.send_json(ack_frame(message) if frame.client_id is not None else direct_sent_frame(message))

    async def on_sync(self, frame: Sync) -> None:
        """Direct messages after ``dm_since`` (kept while the user had no socket), then live ones in order."""
        self.direct_feed.recovering()
        stored, last, recovered = await self.service.store.recover(
            DIRECT, self.user or "", frame.dm_since, 0, self.settings.recovery_limit)
        await self.send_json(directs_frame([direct_frame(direct_message(m)) for m in stored], bool(recovered), last))
        for message in self.direct_feed.start(last):
            await self.send_json(direct_frame(message))

    async def _not_stored(self, exc: Exception, client_id: str | None) -> None:
        ERRORS.labels(code="not_stored").inc()
        logger.warning("message store failed: %s", type(exc).__name__)
        await self.send_json(error_frame("not_stored", "the message could not be stored: send it again", client_id))

    async def on_rooms(self, frame: ListRooms) -> None:
        await self.send_json(rooms_frame(await self.access.visible(self.service.presence.rooms(), self.user or "")))

    async def on_who(self, frame: Who) -> None:
        if not await self._may_enter(frame.room):
            return
        members, count = self.service.presence.member_view(frame.room, self.settings.member_list_limit)
        await self.send_json(members_frame(frame.room, members, count))

    async def on_ping(self, frame: Ping) -> None:
        await self.send_json(pong_frame())

    async def on_share(self, frame: Share) -> None:
        if await self._in_room(frame.room):
            self.pending_share = (frame.room, frame.mime)

    async def _may_enter(self, room: str) -> bool:
        try:
            await self.access.check_enter(room, self.user or "")
        except Forbidden as exc:
            await self.send_json(error_frame("forbidden", str(exc)))
            return False
        return True

    async def _in_room(self, room: str, client_id: str | None = None) -> bool:
        if room in self.rooms:
            return True
        await self.send_json(error_frame("not_in_room", f"join room {room!r} first", client_id))
        return False

    # ------------------------------------------------------------------ layer messages

    async def chat_message(self, message: dict[str, Any]) -> None:
        room = message["room"]
        feed = self.feeds.get(room)
        if feed is None:
            return  # left the room meanwhile
        for ready in feed.offer(message):
            await self._send_message(ready)
        if feed.gap:
            self._fill_later(room, feed)

    async def _send_message(self, message: dict[str, Any]) -> None:
        # every member of the room in this process gets the same text: encode it once
        text = self.service.encoded.get_or_make(message["id"], lambda: self.encode_json(message_frame(message)))
        FRAMES_OUT.inc("message")
        await self.send(text_data=text)

    def _fill_later(self, room: str, feed: Feed) -> None:
        task = self._fills.get(room)
        if task is None or task.done():
            self._fills[room] = asyncio.create_task(self._fill(room, feed))

    async def _fill(self, room: str, feed: Feed) -> None:
        """Messages wait behind a seq the layer has not delivered: usually it comes a moment later (two
        workers published at once); if not (the broker lost it), read it from the store."""
        await asyncio.sleep(GAP_WAIT_SECONDS)
        if not feed.gap or feed.next_seq is None or self.feeds.get(room) is not feed:
            return
        stored, complete = await self.service.store.since(ROOM, room, feed.next_seq - 1, self.settings.recovery_limit)
        ready = [out for m in stored for out in feed.offer(room_message(m))] if complete else feed.skip_gap()
        for message in ready:
            await self._send_message(message)

    async def chat_typing(self, message: dict[str, Any]) -> None:
        if message["from"] != self.user:
            await self.send_json(typing_frame(message))

    async def chat_direct(self, message: dict[str, Any]) -> None:
        if message.get("seq") is None:  # a job's notification (app/worker): not stored, delivered at least once
            if self.delivered_jobs.first_time(("direct", message["id"], message["to"])):
                await self.send_json(direct_frame(message))
            return
        for ready in self.direct_feed.offer(message):  # a gap here is filled by the client's next sync
            await self.send_json(direct_frame(ready))

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

