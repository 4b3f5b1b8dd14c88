"""Each reach of ``app/channels/_compat.py`` against the installed library: fails loudly when it changes."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from app.channels import _compat

from ..brokers import URLS, require_broker
from ..live_server import free_port


async def test_server_transport_finds_uvicorns_transport() -> None:
    """Through Starlette's WebSocket and uvicorn's websockets protocol, to a transport that can abort."""
    import uvicorn
    import websockets

    found: list[object] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        found.append(_compat.server_transport(_compat.websocket_send(websocket)))
        await websocket.send_text("ok")
        await websocket.close()

    port = free_port()
    config = uvicorn.Config(Starlette(routes=[WebSocketRoute("/ws", endpoint)]), port=port, log_level="warning",
                            lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no start event
            await asyncio.sleep(0.02)
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as client:
            assert await client.recv() == "ok"
    finally:
        server.should_exit = True
        await serving
    (transport,) = found
    assert isinstance(transport, asyncio.Transport) and callable(transport.abort)


async def test_raw_frame_writer_writes_whole_frames_while_the_socket_is_open() -> None:
    """Frames made by app/channels/frames.py reach a websockets client as they would through ASGI, in
    order with ASGI's own; once the server has sent its close frame the writer writes nothing. The
    handshake's request and response, released after accept, are not needed again."""
    import uvicorn
    import websockets

    from app.channels.frames import frame_of

    after_close: list[bool] = []
    released: list[object] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        transport, write = _compat.accepted(_compat.websocket_send(websocket))
        protocol = _compat._server_protocol(_compat.websocket_send(websocket))
        released.extend([protocol.request, protocol.response])
        assert write is not None and transport is protocol.transport
        assert write(frame_of("héllo")) and write(frame_of(b"\x00\x01")) and write(frame_of("x" * 70_000))
        await websocket.send_text("through ASGI")
        assert write(frame_of("y" * 300))
        await websocket.close()
        after_close.append(write(frame_of("too late")))

    port = free_port()
    config = uvicorn.Config(Starlette(routes=[WebSocketRoute("/ws", endpoint)]), port=port, log_level="warning",
                            lifespan="off", ws=_compat.lean_websocket_protocol())  # app/server.py's
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no start event
            await asyncio.sleep(0.02)
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as client:
            got = [await client.recv() for _ in range(5)]
            with pytest.raises(websockets.ConnectionClosedOK):
                await client.recv()
    finally:
        server.should_exit = True
        await serving
    assert got == ["héllo", b"\x00\x01", "x" * 70_000, "through ASGI", "y" * 300]
    assert after_close == [False]
    assert released == [None, None]  # and the socket served on without them


async def test_the_lean_protocol_keeps_its_events_in_a_local_queue() -> None:
    import uvicorn

    from app.channels.local import LocalQueue

    config = uvicorn.Config(Starlette(), ws=_compat.lean_websocket_protocol())
    config.load()
    protocol: Any = _compat.lean_websocket_protocol()(config=config, server_state=uvicorn.server.ServerState(),
                                                       app_state={})
    assert isinstance(protocol.queue, LocalQueue)


def test_accepted_of_something_else_is_nothing() -> None:
    assert _compat.accepted(print) == (None, None)


def test_server_transport_of_something_else_is_none() -> None:
    assert _compat.server_transport(print) is None


@pytest.mark.skipif(importlib.util.find_spec("redis") is None, reason="the redis extra is not installed")
async def test_cluster_needs_initialize_until_the_slot_map_is_loaded() -> None:
    from redis.asyncio.cluster import RedisCluster

    cluster = RedisCluster.from_url("redis://127.0.0.1:1/0")  # never contacted
    assert _compat.cluster_needs_initialize(cluster) is True
    await cluster.aclose()


@pytest.mark.skipif(importlib.util.find_spec("nats") is None, reason="the nats extra is not installed")
async def test_nats_queued_messages_are_taken_with_their_bookkeeping() -> None:
    require_broker("nats")
    import nats

    client = await nats.connect(URLS["nats"])
    try:
        sub = await client.subscribe(client.new_inbox())
        assert not _compat.nats_has_queued(sub) and _compat.nats_take_queued(sub) is None
        for n in range(3):
            await client.publish(sub.subject, b"m%d" % n)
        await client.flush()
        for _ in range(50):
            if sub.pending_msgs == 3:
                break
            await asyncio.sleep(0.02)
        assert _compat.nats_has_queued(sub) and sub.pending_bytes == 6
        assert [_compat.nats_take_queued(sub).data for _ in range(3)] == [b"m0", b"m1", b"m2"]
        assert sub.pending_msgs == 0 and sub.pending_bytes == 0 and _compat.nats_take_queued(sub) is None
    finally:
        await client.close()
