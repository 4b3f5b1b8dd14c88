"""The consumer's writer, driven through Starlette's WebSocket over a plain ASGI receive/send pair."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any, ClassVar

import pytest
from starlette.websockets import WebSocket

from app.channels.consumer import AsyncJsonWebSocketConsumer, AsyncWebSocketConsumer


class Burst(AsyncJsonWebSocketConsumer):
    """Answers a frame with ``count`` text frames queued at once, a binary frame after the first ``split``."""

    batch_frames: ClassVar[int] = 4

    async def receive_json(self, content: Any) -> None:
        for n in range(content["count"]):
            await self.send_json({"n": n})
            if n + 1 == content.get("split"):
                await self.send(bytes_data=b"\x00binary")
        await self.send_json({"done": True})


async def converse(consumer: AsyncJsonWebSocketConsumer, request: dict[str, Any]) -> list[str | bytes]:
    """Connect, send ``request``, and return every message the consumer sends up to ``{"done": true}``."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for event in ({"type": "websocket.connect"}, {"type": "websocket.receive", "text": json.dumps(request)}):
        incoming.put_nowait(event)
    sent: list[str | bytes] = []

    async def send(event: MutableMapping[str, Any]) -> None:
        if event["type"] == "websocket.send":
            sent.append(event.get("text") or event["bytes"])
            if '"done":true' in str(sent[-1]):
                incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})

    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    await asyncio.wait_for(consumer(WebSocket(scope, incoming.get, send)), 10)
    return sent


@pytest.mark.parametrize("batch", [1, 4])
async def test_queued_text_frames_leave_in_order_batched_up_to_the_limit(batch: int) -> None:
    consumer = Burst()
    consumer.batch_frames = batch  # type: ignore[misc]
    messages = await converse(consumer, {"count": 9})
    frames: list[Any] = []
    for message in messages:
        data = json.loads(message)
        frames += data if isinstance(data, list) else [data]
    assert frames == [{"n": n} for n in range(9)] + [{"done": True}]
    assert len(messages) == (10 if batch == 1 else 3)  # 4 + 4 + 2 queued frames
    assert all(isinstance(json.loads(m), list) for m in messages) == (batch > 1)


async def test_a_binary_frame_keeps_its_place_between_batches() -> None:
    messages = await converse(Burst(), {"count": 5, "split": 3})
    assert messages == ['[{"n":0},{"n":1},{"n":2}]', b"\x00binary", '[{"n":3},{"n":4},{"done":true}]']


def test_batching_without_a_batch_framing_is_refused_up_front() -> None:
    class PlainText(AsyncWebSocketConsumer):
        batch_frames: ClassVar[int] = 8

    with pytest.raises(TypeError, match="join_texts"):
        PlainText()


class Talker(AsyncJsonWebSocketConsumer):
    """Answers a frame with ``count`` text frames of ``size`` characters."""

    send_queue_bytes: ClassVar[int] = 1000
    disconnected_with: int | None = None

    async def receive_json(self, content: Any) -> None:
        for _ in range(content["count"]):
            await self.send(text_data="x" * content["size"])
            if content.get("paced"):
                await asyncio.sleep(0.001)  # the writer runs between frames

    async def disconnect(self, code: int) -> None:
        self.disconnected_with = code


async def test_a_socket_that_stops_taking_frames_is_dropped_past_its_byte_bound() -> None:
    """The client takes the first frame and then nothing (its send never returns): what waits for it is bounded
    in bytes, not frames: 3 more frames of 400 bytes pass the 1,000-byte bound and the consumer stops serving it."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    request = '{"count": 5, "size": 400, "paced": true}'
    for event in ({"type": "websocket.connect"}, {"type": "websocket.receive", "text": request}):
        incoming.put_nowait(event)
    taken: list[dict[str, Any]] = []
    stalled = asyncio.Event()

    async def send(event: MutableMapping[str, Any]) -> None:
        taken.append(dict(event))
        if event["type"] == "websocket.send":
            stalled.set()
            await asyncio.Event().wait()  # a client that stopped reading

    consumer = Talker()
    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    await asyncio.wait_for(consumer(WebSocket(scope, incoming.get, send)), 10)
    assert stalled.is_set()
    assert consumer.disconnected_with == 1013
    # the held frames were never written; the 1013 close was tried (it too never returned) and the socket dropped
    assert [e["type"] for e in taken] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert taken[-1]["code"] == 1013


async def test_a_socket_that_keeps_up_gets_frames_past_the_bound() -> None:
    """The bound is on what waits, not on what passes: 20 frames of 400 bytes, and one frame over the bound
    (a frame alone may always wait), reach a reading client."""
    consumer = Talker()
    got = await converse_raw(consumer, '{"count": 20, "size": 400, "paced": true}', until=20)
    assert got == ["x" * 400] * 20 and consumer.disconnected_with == 1000
    consumer = Talker()
    got = await converse_raw(consumer, '{"count": 1, "size": 5000}', until=1)
    assert got == ["x" * 5000] and consumer.disconnected_with == 1000


async def converse_raw(consumer: AsyncJsonWebSocketConsumer, text: str, until: int) -> list[str | bytes]:
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for event in ({"type": "websocket.connect"}, {"type": "websocket.receive", "text": text}):
        incoming.put_nowait(event)
    sent: list[str | bytes] = []

    async def send(event: MutableMapping[str, Any]) -> None:
        if event["type"] == "websocket.send":
            sent.append(event.get("text") or event["bytes"])
            await asyncio.sleep(0)
            if len(sent) == until:
                incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})

    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    await asyncio.wait_for(consumer(WebSocket(scope, incoming.get, send)), 10)
    return sent
