"""Hostile WebSocket input against a running worker: it answers or closes, never crashes or stops serving.

Each hostile connection is followed by a check that a bystander on the same worker still gets its pong
and that the worker process is the same one (no restart).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from ..chat.client import ChatClient
from ..live_server import LiveServer, live_server, service_env
from .rawws import BINARY, CLOSE, PING, TEXT, RawSocket, frame

pytestmark = pytest.mark.slow

APP = str(Path(__file__).resolve().parents[2] / "app")
RANDOM_FRAMES = int(os.environ.get("RELIABILITY_FUZZ_FRAMES", "300"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = service_env("inmemory", "fuzz", APP_RATE_LIMIT_BURST="100000", APP_RATE_LIMIT_PER_SECOND="100000")
    with live_server(env, workers=1, tmp_path=tmp_path_factory.mktemp("fuzz")) as running:
        yield running


@pytest.fixture
async def bystander(server: LiveServer) -> AsyncIterator[ChatClient]:
    pids, seen = server.worker_pids(), len(server.logs())
    client = await ChatClient.connect(server.ws_url, server.login("bystander"))
    yield client
    await client.send(type="ping")
    await client.expect("pong")
    await client.close()
    assert server.worker_pids() == pids, "the worker restarted"
    # uvicorn itself logs a traceback for each text frame of invalid UTF-8 (and closes it 1007): not ours
    logs = server.logs()[seen:]
    assert "Exception in ASGI application" not in logs and f'"{APP}' not in logs, logs[-3000:]


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 6 else 4)
    if kind == 0:
        return rng.choice([None, True, False, 0, -1, 2**70, 1e308, "", "lobby", "\u0000", "\ud7ff" * 3])
    if kind == 1:
        return rng.choice(["join", "leave", "message", "typing", "direct", "rooms", "who", "ping", "share"])
    if kind == 2:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(40)))
    if kind == 3:
        return rng.uniform(-1e9, 1e9)
    if kind in (4, 5):
        keys = ["type", "room", "text", "to", "mime", "typing", "x"]
        return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [_random_json(rng, depth + 1) for _ in range(rng.randrange(5))]


async def test_random_json_frames_get_answers(server: LiveServer, bystander: ChatClient) -> None:
    rng = random.Random(20261125)
    client = await ChatClient.connect(server.ws_url, server.login("fuzzer"))
    for _ in range(RANDOM_FRAMES):
        content = _random_json(rng)
        if isinstance(content, dict) and rng.random() < 0.7:
            content["type"] = rng.choice(["join", "message", "typing", "direct", "who", "share", "nope"])
        await client.connection.send(json.dumps(content))
    await client.send(type="ping")
    await client.expect("pong", timeout=30)  # answered everything before, in order, without closing
    await client.close()


@pytest.mark.parametrize("depth", [100, 2000, 8000])
async def test_deeply_nested_json(server: LiveServer, bystander: ChatClient, depth: int) -> None:
    client = await ChatClient.connect(server.ws_url, server.login("deep"))
    await client.connection.send("[" * depth + "]" * depth)
    await client.connection.send(json.dumps({"type": "join", "room": json.loads("[" * 50 + "]" * 50)}))
    await client.send(type="ping")
    await client.expect("pong")
    codes = {f["code"] for f in client.seen if isinstance(f, dict) and f.get("type") == "error"}
    assert codes <= {"invalid_json", "invalid_frame"} and codes
    await client.close()


async def test_binary_where_text_is_expected(server: LiveServer, bystander: ChatClient) -> None:
    client = await ChatClient.connect(server.ws_url, server.login("binary"))
    await client.connection.send(json.dumps({"type": "ping"}).encode())
    error = await client.expect("error")
    assert error["code"] == "unexpected_binary"
    await client.close()


def _hostile_frames() -> dict[str, tuple[bytes, set[int | None]]]:
    """Raw byte sequences after the handshake, and the close codes the server may answer with."""
    protocol_error = {1002, None}
    return {
        "invalid utf-8 text": (frame(TEXT, b'{"type": "ping", "x": "\xff\xfe"}'), {1007, None}),
        "truncated utf-8": (frame(TEXT, "é".encode()[:1]), {1007, None}),
        "reserved opcode 3": (frame(0x3, b"x"), protocol_error),
        "reserved opcode 0xB": (frame(0xB, b"x"), protocol_error),
        "rsv bits without extension": (frame(TEXT, b"{}", rsv=0b111), protocol_error),
        "unmasked client frame": (frame(TEXT, b'{"type":"ping"}', mask=False), protocol_error),
        "fragmented ping": (frame(PING, b"x", fin=False), protocol_error),
        "continuation first": (frame(0x0, b"x"), protocol_error),
        "oversized ping": (frame(PING, b"x" * 200), protocol_error),
        "close with bad code": (frame(CLOSE, b"\x03\xe7"), protocol_error),
        "16 EiB announced": (frame(BINARY, b"", length=2**63 - 1), {1009, 1002, None}),
        "17 MB announced": (frame(BINARY, b"", length=17 * 2**20), {1009, None}),
        # random bytes could announce a frame the server then waits for: the first byte is a bad header
        "garbage": (b"\xf3" + random.Random(7).randbytes(4095), protocol_error),
    }


HOSTILE = _hostile_frames()


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_frames_close_the_connection_only(server: LiveServer, bystander: ChatClient, case: str) -> None:
    data, codes = HOSTILE[case]
    raw = await RawSocket.open(server.port, server.login("hostile"))
    await raw.send(data)
    code = await raw.close_code(timeout=20)
    raw.abort()
    assert code in codes, f"{case}: closed with {code}"


async def test_frames_over_the_app_limits_close_with_1009(server: LiveServer, bystander: ChatClient) -> None:
    for payload in ("x" * (16 * 1024 + 1), b"\x00" * (256 * 1024 + 1)):
        client = await ChatClient.connect(server.ws_url, server.login("big"))
        await client.connection.send(payload)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.expect("never", timeout=20)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_fuzzer_that_vanishes_mid_frame(server: LiveServer, bystander: ChatClient) -> None:
    for _ in range(20):
        raw = await RawSocket.open(server.port, server.login("vanish"))
        await raw.send(frame(TEXT, b'{"type": "join", "room": "lobby"}' * 10)[:-50])
        raw.abort()
