"""Channels-style consumers for FastAPI WebSockets (the only module that imports Starlette).

A consumer owns one socket and one process-local channel. Layer messages are dispatched by
``type`` (``chat.message`` -> ``chat_message``) in their own task. A frame goes straight to the
socket when the socket keeps up; when it does not, frames wait in the consumer's backlog, written
by a task that lives only while there is one, and a backlog past ``send_queue_size`` frames or
``send_queue_bytes`` bytes closes the connection (1013) instead of stalling its room. A socket
costs no task of its own beyond the one serving it and the one reading its channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from . import tracing
from ._compat import accepted, websocket_send
from .base import BaseChannelLayer
from .frames import frame_of
from .tasks import cancel_and_wait

logger = logging.getLogger("app.channels.consumer")

CLOSE_SLOW_CONSUMER = 1013
CLOSE_INVALID_DATA = 1007
#: How long a dropped slow consumer may take to read its close frame before its socket is aborted.
DROP_GRACE_SECONDS = 5.0


class AsyncWebSocketConsumer:
    """Override ``connect``, ``receive``, ``disconnect`` and one method per layer message type.

    Slotted (a subclass without ``__slots__`` gets its ``__dict__`` back): an instance dict is ~1.5 KiB
    a socket.
    """

    __slots__ = ("__weakref__", "_backlog", "_backlog_bytes", "_close_sent", "_closing", "_dropped", "_serving",
                 "_task", "_transport", "_write_frame", "_writer", "_writing", "channel_layer", "channel_name",
                 "joined_groups", "path_params", "query_params", "scope", "websocket")

    #: Groups joined on connect and left on disconnect.
    groups: ClassVar[list[str]] = []
    #: Outgoing frames held for a socket that does not keep up before it counts as a slow consumer.
    send_queue_size: ClassVar[int] = 256
    #: The same bound in bytes (a frame shared by many sockets is one string in memory; each socket
    #: counts its length). One frame alone may always wait, whatever its size.
    send_queue_bytes: ClassVar[int] = 1 << 20
    #: Bytes the server's transport buffers for a socket before frames wait in the backlog.
    write_buffer_bytes: ClassVar[int] = 16 * 1024
    #: Most held text frames sent as one (``join_texts``) when a socket falls behind; 1: never.
    batch_frames: ClassVar[int] = 1

    def __init__(self, layer: BaseChannelLayer | None = None) -> None:
        if self.batch_frames > 1 and type(self).join_texts is AsyncWebSocketConsumer.join_texts:
            raise TypeError(f"{type(self).__name__}: batch_frames > 1 needs a join_texts() that frames a batch")
        self.channel_layer = layer
        self.channel_name = ""
        self.joined_groups: set[str] = set()
        #: Frames held: a text frame is its ``str`` (shared by every socket it goes to), a binary one its
        #: ``bytes``, a close frame its ASGI message.
        self._backlog: deque[str | bytes | dict[str, Any]] | None = None  # made when first needed
        self._backlog_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self._writing = False
        self._transport: Any = None
        self._write_frame: Callable[[bytes], bool] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._serving = False
        self._closing = False
        self._close_sent = False
        self._dropped = False

    async def __call__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.scope = websocket.scope
        self.path_params: dict[str, Any] = websocket.path_params
        self.query_params = websocket.query_params
        self._task = asyncio.current_task()
        self._serving = True
        layer_reader: asyncio.Task[None] | None = None
        close_code = 1000
        try:
            if self.channel_layer is not None:
                self.channel_name = await self.channel_layer.new_channel("ws")
                layer_reader = asyncio.create_task(self._read_layer())
                for group in self.groups:
                    await self.group_add(group)
            await self.connect()
            if websocket.application_state == WebSocketState.CONNECTED:
                close_code = await self._read_socket()
        except WebSocketDisconnect as exc:
            close_code = exc.code
        except asyncio.CancelledError:
            if not self._dropped:
                raise
            if self._task is not None:
                self._task.uncancel()
            close_code = CLOSE_SLOW_CONSUMER
        finally:
            self._serving = False
            await cancel_and_wait([layer_reader, self._writer])
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
        self._transport, self._write_frame = accepted(websocket_send(self.websocket))
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.set_write_buffer_limits(high=self.write_buffer_bytes)
        self._flush_later()  # frames sent before the handshake

    def client_gone(self) -> bool:
        """The connection is closed or closing (the client left), as far as the server's transport knows."""
        return self._transport is not None and self._transport.is_closing()

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Send one frame now if the socket keeps up; else hold it (past the bounds: close with 1013)."""
        if not self._closing:
            await self._emit(bytes_data if bytes_data is not None else text_data or "")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closing and (self._close_sent or self._dropped):
            return
        self._closing = self._close_sent = True
        await self._emit({"type": "websocket.close", "code": code, "reason": reason})

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

    def _keeps_up(self) -> bool:
        """Nothing is held or being written and the transport's buffer is empty: a frame written now
        leaves in order and at once (the server's ``send`` waits only while its transport is paused,
        and an empty buffer is never paused)."""
        return (self._transport is not None and not self._backlog and not self._writing and self._writer is None
                and self._transport.get_write_buffer_size() == 0)

    async def _emit(self, frame: str | bytes | dict[str, Any]) -> None:
        if self._keeps_up():
            if self._write_frame is not None and not isinstance(frame, dict) and self._write_frame(frame_of(frame)):
                return
            self._writing = True
            try:
                await self.websocket.send(_message(frame))
            except Exception as exc:  # the client is gone: its reader sees the disconnect
                self._gone(exc)
            finally:
                self._writing = False
            self._flush_later()  # frames held while that write was in progress
            return
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.append(frame)
        if isinstance(frame, dict):  # the close frame: never refused
            self._flush_later()
            return
        self._backlog_bytes += len(frame)
        if len(self._backlog) > 1 and (len(self._backlog) > self.send_queue_size
                                       or self._backlog_bytes > self.send_queue_bytes):  # one frame may always wait
            logger.warning("closing a slow consumer: %d frames (%d bytes) unsent",
                           len(self._backlog), self._backlog_bytes)
            self._closing = self._dropped = True
            self._forget_backlog()
            asyncio.get_running_loop().create_task(self._drop())
            return
        self._flush_later()

    def _gone(self, exc: Exception) -> None:
        logger.debug("a frame could not be sent (%s): the socket is gone", type(exc).__name__)
        self._closing = True
        self._forget_backlog()

    def _forget_backlog(self) -> None:
        if self._backlog is not None:
            self._backlog.clear()  # a writer still holding it stops
        self._backlog = None
        self._backlog_bytes = 0

    def _flush_later(self) -> None:
        """Start the writer for held frames once the socket is accepted (one writer at a time)."""
        if (self._backlog and self._writer is None and not self._writing and self._serving
                and self.websocket.application_state == WebSocketState.CONNECTED):
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _drop(self) -> None:
        """Close with 1013 if the socket still takes a frame; either way stop serving it now.

        A client that stopped reading never drains the server's write buffer, and the server's
        ``transport.close()`` waits for that buffer to flush: the socket (and its buffers) would stay
        open for as long as the client keeps answering with a zero TCP window. So the transport is
        aborted when the close frame cannot be written, or is still unsent a grace period later.
        """
        transport = self._transport
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
        if self._serving and self._task is not None:
            self._task.cancel()

    def join_texts(self, texts: list[str]) -> str:
        """One text frame carrying several held ones: how is the protocol's choice (see the JSON consumer)."""
        raise NotImplementedError

    async def _write(self) -> None:
        """Send held frames in order, then end. Text frames that queued up while the socket was busy
        leave as one frame (one write, one syscall) when ``batch_frames`` allows it."""
        backlog = self._backlog
        if backlog is None:
            self._writer = None
            return
        try:
            while backlog:
                frame = backlog.popleft()
                if isinstance(frame, dict):
                    backlog.clear()
                    await self.websocket.send(frame)
                    return
                self._backlog_bytes -= len(frame)
                if isinstance(frame, str) and self.batch_frames > 1 and backlog and isinstance(backlog[0], str):
                    texts = [frame]
                    while len(texts) < self.batch_frames and backlog and isinstance(backlog[0], str):
                        texts.append(backlog.popleft())  # type: ignore[arg-type]
                        self._backlog_bytes -= len(texts[-1])
                    frame = self.join_texts(texts)
                await self.websocket.send(_message(frame))
        except Exception as exc:
            self._gone(exc)
        finally:
            self._writer = None
            if self._backlog is backlog and not backlog:
                self._backlog = None

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


def _message(frame: str | bytes | dict[str, Any]) -> dict[str, Any]:
    """The ASGI message of a held frame."""
    if isinstance(frame, str):
        return {"type": "websocket.send", "text": frame}
    if isinstance(frame, bytes):
        return {"type": "websocket.send", "bytes": frame}
    return frame


class AsyncJsonWebSocketConsumer(AsyncWebSocketConsumer):
    """Text frames are JSON documents: override ``receive_json``."""

    __slots__ = ()

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
