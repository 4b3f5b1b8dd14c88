"""A client that stops reading is dropped (1013) without delaying its room; memory stays bounded.

The payload is random: the server and websockets negotiate permessage-deflate, and a zero-filled
image compresses to a few hundred bytes, so it never fills a kernel buffer (why the first draft of
this test never saw a drop).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from ..chat.client import ChatClient
from ..live_server import live_server, service_env
from .procstats import local_port, open_fds, rss_bytes, tcp_peers

pytestmark = pytest.mark.slow

IMAGE_BYTES = 250_000
SHARES = 40  # 10 MB of incompressible data: more than a loopback socket's kernel buffers (up to 4 MB) hold


async def test_slow_consumer_is_dropped_and_others_keep_receiving(tmp_path: Path) -> None:
    env = service_env("inmemory", "slow", APP_SEND_QUEUE_SIZE="8", APP_SHARE_BUDGET_BYTES=str(SHARES * 2 * IMAGE_BYTES),
                      APP_RATE_LIMIT_BURST="1000",
                      APP_RATE_LIMIT_PER_SECOND="1000")
    with live_server(env, workers=1, tmp_path=tmp_path) as server:
        (worker,) = server.worker_pids()
        sender = await ChatClient.connect(server.ws_url, server.login("sender"))
        await sender.join("busy")
        fast = await ChatClient.connect(server.ws_url, server.login("fast"))
        await fast.join("busy")
        rss_before, fds_before = rss_bytes(worker), open_fds(worker)

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that stops: tiny kernel buffer
        sock.connect(("127.0.0.1", server.port))
        slow = await websockets.connect(server.ws_url, sock=sock, max_queue=1, ping_interval=None, compression=None)
        await slow.send(json.dumps({"type": "auth", "token": server.login("slow")}))
        await slow.send(json.dumps({"type": "join", "room": "busy"}))
        await fast.expect("presence", lambda f: "slow" in f["joined"])
        assert local_port(sock) in tcp_peers(worker)

        for _ in range(SHARES):
            image = b"\x89PNG\r\n\x1a\n" + os.urandom(IMAGE_BYTES)  # a PNG's magic bytes, then noise
            await sender.send(type="share", room="busy", mime="image/png")
            await sender.connection.send(image)
            assert await fast.expect_bytes(timeout=30) == image
            assert await sender.expect_bytes(timeout=30) == image  # the sender is in the room: it reads too
        assert server.logs().count("closing a slow consumer") == 1
        if not any(isinstance(f, dict) and f["type"] == "presence" and "slow" in f["left"] for f in fast.seen):
            await fast.expect("presence", lambda f: "slow" in f["left"], timeout=30)

        # the worker lets go of the socket although the client still never reads
        for _ in range(150):  # bounded: 30 s
            if local_port(sock) not in tcp_peers(worker):
                break
            await asyncio.sleep(0.2)
        assert local_port(sock) not in tcp_peers(worker), "a dropped slow consumer's socket is still open"
        rss_after, fds_after = rss_bytes(worker), open_fds(worker)
        print(f"worker RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB, fds {fds_before} -> {fds_after}")
        assert rss_after - rss_before < 64 * 2**20  # 10 MB went by; the outbox holds at most 8 frames
        assert fds_after <= fds_before

        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(30):
                while True:
                    await slow.recv()
        # the close frame (1013) cannot get through to a client that stopped reading; the server says why
        assert closed.value.rcvd is None or closed.value.rcvd.code == 1013
        await sender.send(type="message", room="busy", text="after the drop")
        assert (await fast.expect("message"))["text"] == "after the drop"
        await fast.close()
        await sender.close()
