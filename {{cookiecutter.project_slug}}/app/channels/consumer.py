"""Channels-style consumers for FastAPI WebSockets (the only module that imports Starlette).

A consumer owns one socket and one process-local channel. Layer messages are dispatched by
``type`` (``chat.message`` -> ``chat_message``) in their own task; every outgoing frame goes
through a bounded queue drained by one writer task, so a client that stops reading is closed
(1013) instead of stalling its room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, ClassVar

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from . import tracing
from ._compat import server_transport, websocket_send
from .base import BaseChannelLayer
from .tasks import cancel_and_wait

logger = logging.getLogger("app.channels.consumer")

CLOSE_SLOW_CONSUMER = 1013
CLOSE_INVALID_DATA = 1007
#: How long a dropped slow consumer may take to read its close frame before its socket is aborted.
DROP_GRACE_SECONDS = 5.0


class AsyncWebSocketConsumer:
    """Override ``connect``, ``receive``, ``disconnect`` and one method per layer message type."""

    #: Groups joined on connect and left on disconnect.
    groups: ClassVar[list[str]] = []
    #: Outgoing frames queued per connection before it counts as a slow consumer.
    send_queue_size: ClassVar[int] = 256
    #: Most queued text frames sent as one (``join_texts``) when a socket falls behind; 1: never.
    batch_frames: ClassVar[int] = 1

    def __init__(self, layer: BaseChannelLayer | None = None) -> None:
        if self.batch_frames > 1 and type(self).join_texts is AsyncWebSocketConsumer.join_texts:
            raise TypeError(f"{type(self).__name__}: batch_frames > 1 needs a join_texts() that frames a batch")
        self.channel_layer = layer
        self.channel_name = ""
        self.joined_groups: set[str] = set()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.send_queue_size)
        self._closing = False
        self._dropped = False
        self._reader: asyncio.Task[int] | None = None

    async def __call__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.scope = websocket.scope
        self.path_params: dict[str, Any] = websocket.path_params
        self.query_params = websocket.query_params
        tasks: list[asyncio.Task[None]] = []
        close_code = 1000
        try:
            if self.channel_layer is not None:
                self.channel_name = await self.channel_layer.new_channel("ws")
                tasks.append(asyncio.create_task(self._read_layer()))
                for group in self.groups:
                    await self.group_add(group)
            await self.connect()
            if websocket.application_state == WebSocketState.CONNECTED:
                tasks.append(asyncio.create_task(self._write()))
                self._reader = asyncio.create_task(self._read_socket())
                close_code = await self._reader
        except WebSocketDisconnect as exc:
            close_code = exc.code
        except asyncio.CancelledError:
            if not self._dropped:
                raise
            close_code = CLOSE_SLOW_CONSUMER
        finally:
            await cancel_and_wait(tasks)
            await self._leave_all()
            with contextlib.suppress(Exception):
                await self.disconnect(close_code)

    # ------------------------------------------------------------------ override these

    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass

    async def disconnect(self, code: int) -> None:
        pass

    # ------------------------------------------------------------------ helpers

    async def accept(self, subprotocol: str | None = None) -> None:
        await self.websocket.accept(subprotocol=subprotocol)

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Queue one frame; a full queue closes the connection with 1013."""
        frame: dict[str, Any] = {"type": "websocket.send"}
        if bytes_data is not None:
            frame["bytes"] = bytes_data
        else:
            frame["text"] = text_data
        self._queue(frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._closing = True
        frame = {"type": "websocket.close", "code": code, "reason": reason}
        try:
            self._outbox.put_nowait(frame)
        except asyncio.QueueFull:
            with contextlib.suppress(Exception):
                await self.websocket.close(code, reason)

    async def group_add(self, group: str) -> None:
        assert self.channel_layer is not None, "this consumer has no channel layer"
        await self.channel_layer.group_add(group, self.channel_name)
        self.joined_groups.add(group)

    async def group_discard(self, group: str) -> None:
        assert self.channel_layer is not None, "this consumer has no channel layer"
        self.joined_groups.discard(group)
        await self.channel_layer.group_discard(group, self.channel_name)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Call the handler named after ``message["type"]``; a message without one is logged and skipped."""
        kind = message.get("type")
        if not isinstance(kind, str):
            logger.error(
                "%s got a layer message without a str 'type' key (keys: %s); it cannot be dispatched",
                type(self).__name__, ", ".join(map(repr, message)) or "none",
            )
            return
        name = kind.replace(".", "_")
        handler = None if name.startswith("_") else getattr(self, name, None)
        if handler is None:
            logger.warning("%s has no handler for message type %r", type(self).__name__, message.get("type"))
            return
        await handler(message)

    async def websocket_send(self, message: dict[str, Any]) -> None:
        """The ``websocket.send`` envelope: ``mode`` json or bytes, with ``body``."""
        if message.get("mode") == "bytes":
            await self.send(bytes_data=message["body"])
        else:
            await self.send(text_data=json.dumps(message.get("body"), separators=(",", ":")))

    # ------------------------------------------------------------------ internals

    def _queue(self, frame: dict[str, Any]) -> None:
        if self._closing:
            return
        try:
            self._outbox.put_nowait(frame)
        except asyncio.QueueFull:
            logger.warning("closing a slow consumer: %d frames unsent", self._outbox.qsize())
            self._closing = True
            self._dropped = True
            asyncio.get_running_loop().create_task(self._drop())

    async def _drop(self) -> None:
        """Close with 1013 if the socket still takes a frame; either way stop serving it now.

        A client that stopped reading never drains the server's write buffer, and the server's
        ``transport.close()`` waits for that buffer to flush: the socket (and its buffers) would stay
        open for as long as the client keeps answering with a zero TCP window. So the transport is
        aborted when the close frame cannot be written, or is still unsent a grace period later.
        """
        transport = server_transport(websocket_send(self.websocket))
        sent = False
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await self.websocket.close(CLOSE_SLOW_CONSUMER, "too slow")
                sent = True
        if transport is not None:
            if sent:
                asyncio.get_running_loop().call_later(DROP_GRACE_SECONDS, transport.abort)
            else:
                transport.abort()
        if self._reader is not None:
            self._reader.cancel()

    def join_texts(self, texts: list[str]) -> str:
        """One text frame carrying several queued ones: how is the protocol's choice (see the JSON consumer)."""
        raise NotImplementedError

    async def _write(self) -> None:
        """Send queued frames in order. Text frames that queued up while the socket was busy leave
        as one frame (one write, one syscall) when ``batch_frames`` allows it."""
        held: dict[str, Any] | None = None
        while True:
            frame, held = held or await self._outbox.get(), None
            if self.batch_frames > 1 and frame.get("text") is not None and not self._outbox.empty():
                texts = [frame["text"]]
                while len(texts) < self.batch_frames and not self._outbox.empty():
                    following = self._outbox.get_nowait()
                    if following.get("text") is None:
                        held = following
                        break
                    texts.append(following["text"])
                if len(texts) > 1:
                    frame = {"type": "websocket.send", "text": self.join_texts(texts)}
            await self.websocket.send(frame)
            if frame["type"] == "websocket.close":
                return

    async def _read_socket(self) -> int:
        while True:
            frame = await self.websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return int(frame.get("code") or 1000)
            with tracing.frame("binary" if frame.get("bytes") is not None else "text"):
                await self.receive(text_data=frame.get("text"), bytes_data=frame.get("bytes"))

    async def _read_layer(self) -> None:
        assert self.channel_layer is not None
        while True:
            message = await self.channel_layer.receive(self.channel_name)
            try:
                with tracing.delivery(str(message.get("type"))):
                    await self.dispatch(message)
            except Exception:
                logger.exception("handler for %r failed", message.get("type"))

    async def _leave_all(self) -> None:
        if self.channel_layer is None or self.channel_layer.closed:
            return
        for group in list(self.joined_groups):
            with contextlib.suppress(Exception):
                await self.group_discard(group)
        self.channel_layer.release_channel(self.channel_name)


class AsyncJsonWebSocketConsumer(AsyncWebSocketConsumer):
    """Text frames are JSON documents: override ``receive_json``."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self.receive_bytes(bytes_data or b"")
            return
        try:
            content = json.loads(text_data)
        except ValueError as exc:
            await self.invalid_json(str(exc))
            return
        except RecursionError:  # "[[[[..." a few thousand deep: a client must not get a traceback out of us
            await self.invalid_json("nested too deeply")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any) -> None:
        pass

    async def receive_bytes(self, bytes_data: bytes) -> None:
        pass

    async def invalid_json(self, error: str) -> None:
        """A text frame that is not JSON; by default the connection closes with 1007."""
        await self.close(CLOSE_INVALID_DATA, "invalid JSON")

    async def send_json(self, content: Any) -> None:
        await self.send(text_data=self.encode_json(content))

    def join_texts(self, texts: list[str]) -> str:
        """A JSON array of the queued documents, in order (a client unpacks a top-level array)."""
        return f"[{','.join(texts)}]"

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return json.dumps(content, separators=(",", ":"))
