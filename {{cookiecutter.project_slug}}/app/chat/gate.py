"""Who may talk on a chat socket, and for how long: the part of a connection before and around the protocol.

The origin, no token in the URL, the handshake rate per address, the ``auth`` frame (its deadline,
the token, sockets per user), frame sizes, the frame rate, the idle and token-expiry timers, a
logout, and a store or broker failure. Close codes (docs/protocol.md): 1008 policy (origin, token in
the URL, a bad ``auth`` frame, rate limit), 1009 frame too big, 1013 try again (the store or
broker is down or overloaded; also a slow reader's, app/channels/consumer.py), 4001 session ended
(logout), 4003 token expired, 4008 a limit (sockets per user, handshakes per address, share budget),
4408 idle (or no ``auth`` frame in time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Self
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError

from ..accounts.accounts import Accounts
from ..accounts.tokens import Identity, InvalidToken
from ..channels import ChannelLayerError
from ..channels.consumer import CLOSE_SLOW_CONSUMER, AsyncJsonWebSocketConsumer
from ..metrics import CONNECTIONS, ERRORS, FRAMES_OUT, SLOW_CONSUMERS
from ..settings import Settings
from .limits import AddressRate, TokenBucket
from .protocol import error_frame, session_group, user_group, welcome_frame
from .service import ChatService

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013  # also a slow consumer's (app/channels/consumer.py): either way, reconnect
CLOSE_SESSION_ENDED = 4001
CLOSE_TOKEN_EXPIRED = 4003
CLOSE_LIMIT = 4008
CLOSE_IDLE = 4408
#: The longest a handshake or a join waits for its turn at the store before the socket is told to come back.
STORE_WAIT_SECONDS = 10.0
#: What a frame's handling may meet when the store or the broker is down or overloaded.
BUSY_ERRORS = (SQLAlchemyError, ChannelLayerError, TimeoutError, OSError)
logger = logging.getLogger("app.chat.consumer")


class GatedConsumer(AsyncJsonWebSocketConsumer):
    """A JSON consumer that lets only an authenticated, well-behaved client through to ``receive_json``."""

    __slots__ = ("_auth_timer", "_expiry_timer", "_idle_timer", "accounts", "bucket", "handshakes", "identity",
                 "last_seen", "service", "settings", "strikes", "user")

    def __init__(self, service: ChatService, accounts: Accounts, handshakes: AddressRate) -> None:
        super().__init__(service.layer)
        self.service = service
        self.settings = service.settings
        self.accounts = accounts
        self.handshakes = handshakes
        self.identity: Identity | None = None
        self.user: str | None = None
        self.bucket = TokenBucket(self.settings.rate_limit_per_second, self.settings.rate_limit_burst)
        self.strikes = 0
        self.last_seen = time.monotonic()
        # timers, not tasks: a task per socket per timer is kilobytes a socket (docs/scaling.md)
        self._auth_timer: asyncio.TimerHandle | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    @classmethod
    def configured(cls, settings: Settings) -> type[Self]:
        """This class with the settings' outbox bounds as class attributes (a slotted socket has no dict)."""
        return type(cls.__name__, (cls,), {"__slots__": (), "send_queue_size": settings.send_queue_size,
                                           "send_queue_bytes": settings.send_queue_bytes,
                                           "batch_frames": settings.send_batch_frames})

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
        # 4408 like an idle socket, not 1008: under a reconnect storm a loaded worker may read a client's
        # timely auth frame too late, and a page refused with 1008 asks its user to sign in again
        self._auth_timer = self._close_later(self.settings.auth_timeout_seconds, CLOSE_IDLE,
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
            async with self.store_turn() as present:
                if not present:
                    return
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

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            await self._receive(text_data, bytes_data)
        except BUSY_ERRORS as exc:  # the store or the broker is down or overloaded: the client comes back later
            ERRORS.labels(code="busy").inc()
            logger.warning("closing a socket with 1013: %s (%s)", type(exc).__name__, str(exc).split("\n")[0][:200])
            await self.close(CLOSE_TRY_AGAIN, "the server is busy: reconnect")

    async def invalid_json(self, error: str) -> None:
        ERRORS.labels(code="invalid_json").inc()
        await self.send_json(error_frame("invalid_json", f"frame is not JSON: {error}"))

    async def session_revoked(self, message: dict[str, Any]) -> None:
        await self.close(CLOSE_SESSION_ENDED, "logged out")

    async def send_json(self, content: Any) -> None:
        FRAMES_OUT.inc(str(content.get("type", "?")) if isinstance(content, dict) else "?")
        await super().send_json(content)

    @contextlib.asynccontextmanager
    async def store_turn(self) -> AsyncIterator[bool]:
        """A turn at the store (``STORE_GATE`` at a time per worker), waited for at most ``STORE_WAIT_SECONDS``
        (then ``TimeoutError``: 1013, reconnect later); whether the client is still there to be answered. In a
        storm, clients that gave up would otherwise be served, in turn, long after they left."""
        async with asyncio.timeout(STORE_WAIT_SECONDS):
            await self.service.store_gate.acquire()
        try:
            yield not self.client_gone()
        finally:
            self.service.store_gate.release()

    async def disconnect(self, code: int) -> None:
        """The socket is gone: its timers stop and, if it was counted, it no longer is."""
        if code == CLOSE_SLOW_CONSUMER:
            SLOW_CONSUMERS.inc()
        for timer in (self._auth_timer, self._expiry_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        if self.user is None or self not in self.service.connections:
            return
        self.service.connections.discard(self)
        CONNECTIONS.dec()
        with contextlib.suppress(Exception):
            await self.service.presence.connected(self.user, -1)
