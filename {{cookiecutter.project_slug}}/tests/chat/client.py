"""A test WebSocket client that speaks the chat protocol."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

Frame = dict[str, Any]


def unpack(raw: str | bytes) -> list[Frame | bytes]:
    """The frames in one WebSocket message: a JSON array holds frames queued while the socket was busy."""
    if isinstance(raw, bytes):
        return [raw]
    data = json.loads(raw)
    return data if isinstance(data, list) else [data]


class ChatClient:
    def __init__(self, connection: ClientConnection, welcome: Frame) -> None:
        self.connection = connection
        self.welcome = welcome
        self.worker = str(welcome.get("worker"))
        self.seen: list[Frame | bytes] = []
        self._unread: deque[Frame | bytes] = deque()

    @classmethod
    async def connect(cls, ws_url: str, token: str, **kwargs: Any) -> ChatClient:
        """Open a socket and authenticate with the first frame (never a token in the URL)."""
        connection = await websockets.connect(ws_url, open_timeout=10, **kwargs)
        await connection.send(json.dumps({"type": "auth", "token": token}))
        welcome, *rest = unpack(await asyncio.wait_for(connection.recv(), 10))
        assert isinstance(welcome, dict) and welcome["type"] == "welcome", welcome
        client = cls(connection, welcome)
        client._unread.extend(rest)
        return client

    async def send(self, **frame: Any) -> None:
        await self.connection.send(json.dumps(frame))

    async def expect(self, kind: str, match: Callable[[Frame], bool] = lambda f: True, timeout: float = 10) -> Frame:
        """The next frame of ``kind`` that matches; other frames are kept in ``seen``."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next_frame()
                self.seen.append(frame)
                if isinstance(frame, dict) and frame.get("type") == kind and match(frame):
                    return frame

    async def expect_bytes(self, timeout: float = 10) -> bytes:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next_frame()
                if isinstance(frame, bytes):
                    return frame
                self.seen.append(frame)

    async def next_frame(self) -> Frame | bytes:
        if not self._unread:
            self._unread.extend(unpack(await self.connection.recv()))
        return self._unread.popleft()

    async def join(self, room: str, since: int | None = None) -> Frame:
        """Join ``room``; with ``since`` (the last seq this client has), ``joined`` recovers what came after."""
        await self.send(type="join", room=room, **({} if since is None else {"since": since}))
        return await self.expect("joined", lambda f: f["room"] == room)

    async def say(self, room: str, text: str, client_id: str) -> Frame:
        """Send a room message and wait for its ack."""
        await self.send(type="message", room=room, text=text, client_id=client_id)
        return await self.expect("ack", lambda f: f["client_id"] == client_id)

    async def close(self) -> None:
        await self.connection.close()


async def clients_on_distinct_workers(
    ws_url: str, tokens: list[str], within: float = 30, burst: int = 4, **connect: Any
) -> list[ChatClient]:
    """One client per token, each served by a different worker process.

    An idle worker often wins every accept in a row, and on a loaded machine a worker may still
    be booting, so each round opens a burst of connections at once (simultaneous connections wake
    several workers) and rounds go on, a moment apart, for up to ``within`` seconds.
    """
    chosen: list[ChatClient] = []
    deadline = asyncio.get_running_loop().time() + within
    for token in tokens:
        while True:
            opened = await asyncio.gather(*(ChatClient.connect(ws_url, token, **connect) for _ in range(burst)))
            taken = {c.worker for c in chosen}
            fresh = next((c for c in opened if c.worker not in taken), None)
            for client in opened:
                if client is not fresh:
                    await client.close()
            if fresh is not None:
                chosen.append(fresh)
                break
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no connection reached a worker other than {sorted(taken)} within {within}s")
            await asyncio.sleep(0.2)
    return chosen
