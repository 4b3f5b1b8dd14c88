"""One chat connection: authenticates (the first frame), enforces limits, speaks the protocol in protocol.py.

Close codes (docs/protocol.md): 1008 policy (origin, token in the URL, no or a bad ``auth`` frame, rate
limit), 1009 frame too big, 4001 session ended (logout), 4003 token expired, 4008 a limit (sockets per
user, handshakes per address, share budget), 4408 idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError

from ..accounts.accounts import Accounts
from ..accounts.rooms import Forbidden, RoomAccess
from ..accounts.tokens import Identity, InvalidToken
from ..channels import ChannelLayerError
from ..channels.consumer import CLOSE_SLOW_CONSUMER, AsyncJsonWebSocketConsumer
from ..messages.store import DIRECT, ROOM
from ..metrics import CONNECTIONS, ERRORS, FRAMES_IN, FRAMES_OUT, SLOW_CONSUMERS
from ..settings import Settings
from .feed import Feed
from .limits import AddressRate, TokenBucket, image_matches
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
    session_group,
    share_frame,
    typing_frame,
    user_group,
    welcome_frame,
)
from .recent import Recent
from .service import ChatService, direct_message, room_message

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SESSION_ENDED = 4001
CLOSE_TOKEN_EXPIRED = 4003
CLOSE_LIMIT = 4008
CLOSE_IDLE = 4408
CLOSE_TRY_AGAIN = 1013  # also a slow consumer's (app/channels/consumer.py): either way, reconnect
#: What a frame's handling may meet when the store or the broker is down or overloaded.
BUSY_ERRORS = (SQLAlchemyError, ChannelLayerError, TimeoutError, OSError)
#: How long a room message waits for the one before it before that one is read from the store.
GAP_WAIT_SECONDS = 0.5
logger = logging.getLogger(__name__)


class ChatConsumer(AsyncJsonWebSocketConsumer):
    __slots__ = ("_auth_timer", "_delivered_jobs", "_expiry_timer", "_fills", "_idle_timer", "access", "accounts",
                 "bucket", "direct_feed", "feeds", "handshakes", "identity", "last_seen", "pending_share", "rooms",
                 "service", "settings", "shared_bytes", "strikes", "user")

    @classmethod
    def configured(cls, settings: Settings) -> type[ChatConsumer]:
        """This class with the settings' outbox bounds as class attributes (a slotted socket has no dict)."""
        return type(cls.__name__, (cls,), {"__slots__": (), "send_queue_size": settings.send_queue_size,
                                           "send_queue_bytes": settings.send_queue_bytes,
                                           "batch_frames": settings.send_batch_frames})

    def __init__(self, service: ChatService, accounts: Accounts, access: RoomAccess, handshakes: AddressRate) -> None:
        super().__init__(service.layer)
        self.service = service
        self.settings = service.settings
        self.accounts = accounts
        self.access = access
        self.handshakes = handshakes
        self.identity: Identity | None = None
        self.user: str | None = None
        self.shared_bytes = 0
        self.rooms: set[str] = set()
        self.pending_share: tuple[str, str] | None = None
        self.bucket = TokenBucket(self.settings.rate_limit_per_second, self.settings.rate_limit_burst)
        self.strikes = 0
        self.last_seen = time.monotonic()
        # timers, not tasks: a task per socket per timer is kilobytes a socket (docs/scaling.md)
        self._auth_timer: asyncio.TimerHandle | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._delivered_jobs: Recent | None = None  # job messages are delivered at least once: drop repeats
        self.feeds: dict[str, Feed] = {}  # per room: its messages in seq order, each once (feed.py)
        self.direct_feed = Feed()
        self._fills: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ connection

    async def connect(self) -> None:
        origin = self.websocket.headers.get("origin")
        if origin and not self._origin_allowed(origin):
            await self._refuse("origin", f"origin {origin} is not allowed")
            return
        if "token" in self.query_params:
            await self._refuse("token_in_url", 'a token in the URL is not accepted: send {"type": "auth"} first')
            return
        address = self.websocket.client.host if self.websocket.client else "unknown"
        if not self.handshakes.allow(address):
            await self._refuse("handshake_rate", "too many new connections from your address", CLOSE_LIMIT)
            return
        await self.accept()
        self._auth_timer = self._close_later(self.settings.auth_timeout_seconds, CLOSE_POLICY,
                                             "no auth frame in time", "auth_timeout")

    async def _authenticate(self, text_data: str | None) -> None:
        """The first frame: ``{"type": "auth", "token": ...}``; anything else closes with 1008."""
        try:
            frame = json.loads(text_data) if text_data is not None else None
        except (ValueError, RecursionError):
            frame = None
        token = frame.get("token") if isinstance(frame, dict) and frame.get("type") == "auth" else None
        if not isinstance(token, str):
            await self._refuse("auth", 'the first frame must be {"type": "auth", "token": "..."}', accepted=True)
            return
        if self._auth_timer is not None:  # the client did its part in time; checking the token is ours
            self._auth_timer.cancel()
        try:
            async with self.service.store_gate:
                identity = await self.accounts.verify(token)
        except InvalidToken as exc:
            await self._refuse("token", str(exc), accepted=True)
            return
        if self.service.presence.sockets(identity.user) >= self.settings.max_connections_per_user:
            limit = self.settings.max_connections_per_user
            await self._refuse("too_many_connections", f"{limit} sockets per user at most", CLOSE_LIMIT, accepted=True)
            return
        self.identity, self.user = identity, identity.user
        self.service.connections.add(self)
        # counted before the next await, so two handshakes of one user on this worker cannot both pass the check
        await self.service.presence.connected(identity.user, +1)
        await self.group_add(user_group(identity.user))
        if identity.session is not None:
            await self.group_add(session_group(identity.session))
        CONNECTIONS.inc()
        self._idle_timer = asyncio.get_running_loop().call_later(self.settings.idle_timeout_seconds, self._check_idle)
        self._expiry_timer = self._close_later(identity.expires - time.time(), CLOSE_TOKEN_EXPIRED, "token expired",
                                               "token_expired")
        await self.send_json(welcome_frame(identity.user, identity.role, identity.session, self.service.worker_id,
                                           self.settings.history_size))

    def _close_later(self, delay: float, code: int, reason: str, what: str) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(max(delay, 0), self._close_now, code, reason, what)

    def _close_now(self, code: int, reason: str, what: str) -> None:
        if not self._closing:
            ERRORS.labels(code=what).inc()
            asyncio.get_running_loop().create_task(self.close(code, reason))

    async def disconnect(self, code: int) -> None:
        if code == CLOSE_SLOW_CONSUMER:
            SLOW_CONSUMERS.inc()
        for timer in (self._auth_timer, self._expiry_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        for task in self._fills.values():
            task.cancel()
        if self.user is None or self not in self.service.connections:
            return
        self.service.connections.discard(self)
        CONNECTIONS.dec()
        with contextlib.suppress(Exception):
            await self.service.presence.connected(self.user, -1)
        for room in list(self.rooms):
            self.service.presence.unwatch(room, self._presence_changed)
            with contextlib.suppress(Exception):
                await self.service.presence.leave(room, self.user)

    def _origin_allowed(self, origin: str) -> bool:
        origin = origin.rstrip("/")
        if self.settings.allowed_origins:
            return origin in self.settings.allowed_origins
        return urlsplit(origin).netloc == self.websocket.headers.get("host")

    async def _refuse(self, what: str, reason: str, code: int = CLOSE_POLICY, accepted: bool = False) -> None:
        """Accept, then close (1008 by default), so the page can read why (a refused handshake says nothing)."""
        ERRORS.labels(code=f"refused_{what}").inc()
        if not accepted:
            await self.accept()
        await self.close(code, reason)

    def _check_idle(self) -> None:
        """Close a socket that sent nothing for ``idle_timeout_seconds``; else look again when it would be."""
        timeout = self.settings.idle_timeout_seconds
        quiet = time.monotonic() - self.last_seen
        if quiet >= timeout:
            self._close_now(CLOSE_IDLE, "idle timeout", "idle")
        else:
            self._idle_timer = asyncio.get_running_loop().call_later(timeout - quiet, self._check_idle)

    @property
    def delivered_jobs(self) -> Recent:
        if self._delivered_jobs is None:
            self._delivered_jobs = Recent()
        return self._delivered_jobs

    # ------------------------------------------------------------------ client frames

    async def _receive(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if self._closing:
            return
        self.last_seen = time.monotonic()
        size = len(bytes_data) if bytes_data is not None else len((text_data or "").encode())
        limit = self.settings.max_binary_frame_bytes if bytes_data is not None else self.settings.max_text_frame_bytes
        if size > limit:
            ERRORS.labels(code="too_big").inc()
            await self.close(CLOSE_TOO_BIG, f"frame of {size} bytes is over the {limit}-byte limit")
            return
        if self.user is None:
            await self._authenticate(text_data)
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

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            await self._receive(text_data, bytes_data)
        except BUSY_ERRORS as exc:  # the store or the broker is down or overloaded: the client comes back later
            ERRORS.labels(code="busy").inc()
            logger.warning("closing a socket with 1013: %s (%s)", type(exc).__name__, str(exc).split("\n")[0][:200])
            await self.close(CLOSE_TRY_AGAIN, "the server is busy: reconnect")

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
        async with self.service.store_gate:
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

    async def session_revoked(self, message: dict[str, Any]) -> None:
        await self.close(CLOSE_SESSION_ENDED, "logged out")

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

    async def send_json(self, content: Any) -> None:
        FRAMES_OUT.inc(str(content.get("type", "?")) if isinstance(content, dict) else "?")
        await super().send_json(content)
