"""Abuse limits on a real server: each refuses with its documented code while the server keeps serving others.

4008: sockets per user (counted across workers), handshakes per address, the share budget; error
frames: ``too_many_rooms`` (per user, over all their sockets) and ``bad_image`` (magic bytes). uvicorn
takes no per-message deflate and drops a frame over the largest frame limit before reading it.
"""

from __future__ import annotations

import asyncio
import secrets
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from ..chat.client import ChatClient, Frame, clients_on_distinct_workers
from ..live_server import LiveServer, live_server, service_env
from .procstats import rss_bytes
from .rawws import BINARY, RawSocket, frame

PNG = b"\x89PNG\r\n\x1a\n"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = service_env("redis", f"limits{secrets.token_hex(4)}", APP_MAX_CONNECTIONS_PER_USER="3",
                      APP_MAX_ROOMS_PER_USER="2", APP_SHARE_BUDGET_BYTES="1000")
    with live_server(env, workers=2, tmp_path=tmp_path_factory.mktemp("limits")) as running:
        yield running


async def still_chats(server: LiveServer, name: str) -> None:
    """Another user, after a refusal, joins and gets their own message back."""
    other = await ChatClient.connect(server.ws_url, server.login(name))
    await other.join(f"{name}-room")
    await other.send(type="message", room=f"{name}-room", text="still here")
    assert (await other.expect("message"))["text"] == "still here"
    await other.close()


async def close_of(client: ChatClient) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await client.expect("never", timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_sockets_per_user_are_counted_across_workers(server: LiveServer) -> None:
    token = server.login("many")
    first, second = await clients_on_distinct_workers(server.ws_url, [token, token], burst=2)  # 3 at most at once
    third = await ChatClient.connect(server.ws_url, token)
    refused: tuple[int, str] | None = None
    async with asyncio.timeout(15):  # the other worker hears of a new socket through the layer, a moment later
        while refused is None:
            try:
                extra = await ChatClient.connect(server.ws_url, token)
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                refused = exc.rcvd.code, exc.rcvd.reason
            else:
                await extra.close()
                await asyncio.sleep(0.2)
    assert refused == (4008, "3 sockets per user at most")
    await still_chats(server, "notmany")
    await first.close()  # a closed socket frees its place
    async with asyncio.timeout(15):
        while True:
            try:
                again = await ChatClient.connect(server.ws_url, token)
                break
            except ConnectionClosed:
                await asyncio.sleep(0.2)
    for client in (second, third, again):
        await client.close()


async def join_answer(client: ChatClient, room: str) -> Frame:
    """``joined`` for ``room``, or the error refusing it."""
    await client.send(type="join", room=room)
    while True:
        reply = await client.next_frame()
        if isinstance(reply, dict) and (reply["type"] == "error" or reply == {**reply, "type": "joined", "room": room}):
            return reply


async def test_rooms_are_limited_per_user_over_all_their_sockets(server: LiveServer) -> None:
    token = server.login("roomy")
    one, two = await ChatClient.connect(server.ws_url, token), await ChatClient.connect(server.ws_url, token)
    await one.join("r1")
    await two.join("r2")
    async with asyncio.timeout(15):  # presence of the other socket's room may come from the other worker
        while (reply := await join_answer(one, "r3"))["type"] == "joined":
            await one.send(type="leave", room="r3")
            await one.expect("left")
            await asyncio.sleep(0.2)
    assert reply["code"] == "too_many_rooms" and "per user" in reply["detail"]
    await one.send(type="join", room="r1")  # a room the user is in already is fine
    await one.expect("joined", lambda f: f["room"] == "r1")
    for client in (one, two):
        await client.close()


async def test_share_budget_closes_with_4008_and_a_wrong_image_type_is_refused(server: LiveServer) -> None:
    sender = await ChatClient.connect(server.ws_url, server.login("sharer"))
    watcher = await ChatClient.connect(server.ws_url, server.login("watcher"))
    for client in (sender, watcher):
        await client.join("pics")
    await sender.send(type="share", room="pics", mime="image/png")
    await sender.connection.send(b"GIF89a" + b"\0" * 100)  # declared png, is a gif
    assert (await sender.expect("error"))["code"] == "bad_image"
    await sender.send(type="share", room="pics", mime="image/png")
    await sender.connection.send(PNG + b"\0" * 500)
    assert len(await watcher.expect_bytes()) == 508
    await sender.send(type="share", room="pics", mime="image/png")
    await sender.connection.send(PNG + b"\0" * 500)  # 608 + 508 > the 1000-byte budget
    assert await close_of(sender) == (4008, "share budget of 1000 bytes used up")
    assert [f for f in watcher.seen if isinstance(f, dict) and f.get("type") == "share"] == [
        {"type": "share", "room": "pics", "from": "sharer", "mime": "image/png", "size": 508}]
    await still_chats(server, "aftershare")
    await watcher.close()


async def test_compressed_and_oversized_frames_are_refused_before_they_are_read(server: LiveServer) -> None:
    """No deflate is negotiated, so a compressed frame is a protocol error (1002) and never inflated; a frame
    announcing 16 MiB is refused (1009) from its header. Eight of each cost the worker no memory to speak of."""
    bomb = zlib.compressobj(wbits=-15)
    compressed = bomb.compress(b"\0" * 16 * MiB) + bomb.flush()  # 16 MiB that travel as ~16 KiB
    token = server.login("bomber")
    pids = server.worker_pids()
    before = {pid: rss_bytes(pid) for pid in pids}
    for _ in range(8):
        raw = await RawSocket.open(server.port, token, extensions="permessage-deflate; client_max_window_bits")
        assert "permessage-deflate" not in raw.handshake.lower()
        await raw.send(frame(BINARY, compressed, rsv=0b100))  # RSV1: "compressed"
        assert await raw.close_code() == 1002
        raw.abort()
        raw = await RawSocket.open(server.port, token)
        await raw.send(frame(BINARY, b"\0" * 1024, length=16 * MiB))  # announces 16 MiB, sends 1 KiB
        assert await raw.close_code() == 1009
        raw.abort()
    growth = max(rss_bytes(pid) - before[pid] for pid in pids)
    assert growth < 8 * MiB, f"a worker grew by {growth / MiB:.1f} MiB"
    await still_chats(server, "afterbomb")


async def test_handshakes_per_address_are_rate_limited(tmp_path: Path) -> None:
    # burst: 5, then 1 every 2 s: 12 handshakes run out of tokens unless they take over 14 s (a loaded machine)
    env = service_env("inmemory", "handshakes", APP_HANDSHAKE_RATE_PER_ADDRESS="0.5")
    with live_server(env, workers=1, tmp_path=tmp_path) as server:
        token = server.login("eager")
        codes = []
        for _ in range(12):
            try:
                client = await ChatClient.connect(server.ws_url, token)
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                codes.append((exc.rcvd.code, exc.rcvd.reason))
            else:
                codes.append((1000, "welcome"))
                await client.close()
        assert codes.count((1000, "welcome")) >= 5
        assert (4008, "too many new connections from your address") in codes
        await asyncio.sleep(2.5)  # the bucket refills at 1 per 2 seconds
        client = await ChatClient.connect(server.ws_url, token)
        await client.close()


async def test_an_unauthenticated_socket_is_closed_and_counts_for_nothing(server: LiveServer) -> None:
    async with websockets.connect(server.ws_url) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 25)  # APP_AUTH_TIMEOUT_SECONDS: 10
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
