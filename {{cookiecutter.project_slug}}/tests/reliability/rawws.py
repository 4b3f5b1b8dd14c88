"""A WebSocket client that sends whatever bytes a test asks for: bad opcodes, bad UTF-8, lying lengths."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct

TEXT, BINARY, CLOSE, PING = 0x1, 0x2, 0x8, 0x9


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True,
          length: int | None = None) -> bytes:
    """One frame; ``length`` overrides the announced payload length (a lie the server must survive)."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 2**16:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.handshake = ""

    @classmethod
    async def open(cls, port: int, token: str, extensions: str | None = None) -> RawSocket:
        """A socket past the handshake (offering ``extensions``) and the ``auth`` frame; ``handshake`` is the answer."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
        writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n{offer}"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        raw = cls(reader, writer)
        raw.handshake = head.decode("latin-1")
        await raw.send(frame(TEXT, json.dumps({"type": "auth", "token": token}).encode()))
        return raw

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close_code(self, timeout: float = 10) -> int | None:
        """Read until the server's close frame (its code) or EOF (``None``), skipping other frames."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    first, second = await self.reader.readexactly(2)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return None
                size = second & 0x7F
                if size == 126:
                    size = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif size == 127:
                    size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                payload = await self.reader.readexactly(size)
                if first & 0x0F == CLOSE:
                    return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005

    def abort(self) -> None:
        self.writer.transport.abort()
