"""bench/wsclient.py against a real RFC 6455 server (the ``websockets`` library's): frames of every length
encoding, a fragmented message, the server's ping, its close code, a refused upgrade, a source address."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from bench.wsclient import HandshakeError, WebSocketClient, mask


class Recorder(WebSocketClient):
    __slots__ = ("texts", "codes", "got")

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.codes: list[int] = []
        self.got: asyncio.Queue[str] = asyncio.Queue()

    def on_text(self, data: bytes) -> None:
        self.got.put_nowait(data.decode())

    def on_close(self, code: int) -> None:
        self.codes.append(code)


async def handler(ws: ServerConnection) -> None:
    """Echoes text; ``fragments`` answers in three fragments; ``ping`` waits for the client's pong;
    ``bye`` closes with 4000; ``peer`` answers the client's address."""
    async for message in ws:
        assert isinstance(message, str)
        if message == "fragments":
            await ws.send(iter(["one ", "two ", "three"]))
        elif message == "ping":
            latency = await asyncio.wait_for(await ws.ping(b"are you there"), 5)
            await ws.send(f"pong after {latency >= 0}")
        elif message == "bye":
            await ws.close(4000, "bye")
        elif message == "peer":
            await ws.send(str(ws.remote_address[0]))
        else:
            await ws.send(message)


def refuse(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == "/forbidden":
        return connection.respond(HTTPStatus.FORBIDDEN, "no\n")
    return None


def run(check: Any) -> None:
    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None, process_request=refuse) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            await asyncio.wait_for(check(port), 20)

    asyncio.run(main())


def test_mask_is_its_own_inverse_and_matches_the_rfc_example() -> None:
    key = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 5.7: "Hello" masked
    assert mask(b"Hello", key) == bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert mask(mask(b"x" * 1001, key), key) == b"x" * 1001
    assert mask(b"", key) == b""


def test_text_of_every_length_encoding_round_trips() -> None:
    async def check(port: int) -> None:
        client = Recorder()
        await client.connect("127.0.0.1", port, "/", source="127.0.0.2")
        for size in (0, 1, 125, 126, 65535, 65536, 300_000):  # 7-bit, 16-bit and 64-bit lengths
            text = ("é" if size % 2 else "a") * size
            client.send_text(text)
            assert await client.got.get() == text, size
        client.send_text("peer")
        assert await client.got.get() == "127.0.0.2"  # bound before connect
        client.close()
        while not client.closed:
            await asyncio.sleep(0.01)
        assert client.codes == [1000]

    run(check)


def test_fragments_ping_and_the_servers_close_code() -> None:
    async def check(port: int) -> None:
        client = Recorder()
        await client.connect("127.0.0.1", port, "/")
        client.send_text("fragments")
        assert await client.got.get() == "one two three"
        client.send_text("ping")  # answered only if the client sent the pong
        assert await client.got.get() == "pong after True"
        client.send_text("bye")
        while not client.closed:
            await asyncio.sleep(0.01)
        assert client.codes == [4000] and client.close_code == 4000

    run(check)


def test_a_refused_upgrade_raises_and_an_abort_reports_1006() -> None:
    async def check(port: int) -> None:
        with pytest.raises(HandshakeError, match="403"):
            await Recorder().connect("127.0.0.1", port, "/forbidden")
        client = Recorder()
        await client.connect("127.0.0.1", port, "/")
        client.abort()
        while not client.closed:
            await asyncio.sleep(0.01)
        assert client.codes == [1006]

    run(check)
