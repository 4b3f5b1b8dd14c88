"""A lean WebSocket client (RFC 6455: text frames, ping/pong, close) for tens of thousands of sockets per process.

The ``websockets`` client keeps a task, a queue and its own buffers per connection: at 20,000 sockets on
two shared cores the load client, not the server, would be what a benchmark measures. This is an
``asyncio.Protocol`` and nothing more: the HTTP/1.1 upgrade, masked client frames, unmasked server
frames parsed in place, pings answered, a close echoed. No extensions (no per-message deflate), no
subprotocols, no binary sends. Subclass it and override ``on_text`` and ``on_close``; ``connect``
binds a source address before connecting (spread sockets over 127.0.0.x so ephemeral ports last)
and can shrink the receive buffer (a client that never reads).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import socket
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
#: Linux: bind(addr, 0) before connect() takes the port only at connect(), per 4-tuple.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class HandshakeError(ConnectionError):
    """The server did not switch protocols (its status line is the message)."""


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key, as one big integer (no per-byte Python loop)."""
    n = len(payload)
    if not n:
        return b""
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (masked, as RFC 6455 requires of clients)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = random.getrandbits(32).to_bytes(4, "big")
    return header + key + mask(payload, key)


class WebSocketClient(asyncio.Protocol):
    """One client socket. ``opened`` resolves once the upgrade is done; ``on_text`` gets each text message."""

    __slots__ = ("transport", "opened", "close_code", "closed", "_buf", "_key", "_upgraded", "_fragments",
                 "_close_sent", "_request")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] | None = None
        self.close_code: int | None = None  # the server's close code, 1006 when the socket just went away
        self.closed = False
        self._buf = bytearray()
        self._key = b""
        self._upgraded = False
        self._fragments: list[bytes] | None = None
        self._close_sent = False
        self._request = b""

    # ------------------------------------------------------------------ override these

    def on_open(self) -> None:
        """The upgrade is done: the place for the first frames."""

    def on_text(self, data: bytes) -> None:
        """One text message, its UTF-8 bytes (decoding is the caller's choice: most frames need none)."""

    def on_close(self, code: int) -> None:
        """The connection ended: ``code`` is the server's close code, 1006 if there was no close frame."""

    # ------------------------------------------------------------------ sending

    def send_text(self, text: str) -> None:
        if self.transport is not None and not self._close_sent:
            self.transport.write(encode_frame(TEXT, text.encode()))

    def close(self, code: int = 1000) -> None:
        """Send a close frame; the server closes the TCP connection after it."""
        if self.transport is not None and not self._close_sent:
            self._close_sent = True
            self.transport.write(encode_frame(CLOSE, struct.pack("!H", code)))

    def abort(self) -> None:
        """Drop the TCP connection at once (RST), as a client that lost its network would look to the server."""
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)
        self._request = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_open(exc or ConnectionResetError("closed during the upgrade"))
        self._finish(1006)

    def _fail_open(self, exc: Exception) -> None:
        """``opened`` fails (marked retrieved: whoever awaited it may have been cancelled already)."""
        if self.opened is not None and not self.opened.done():
            self.opened.set_exception(exc)
            self.opened.exception()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self._check_upgrade(bytes(buf[:end]))
            del buf[:end + 4]
            if not self._upgraded:
                return
        self._parse(buf)

    def _check_upgrade(self, head: bytes) -> None:
        status, *lines = head.split(b"\r\n")
        headers = dict(line.split(b":", 1) for line in lines if b":" in line)
        accept = {k.strip().lower(): v.strip() for k, v in headers.items()}.get(b"sec-websocket-accept")
        if not status.startswith(b"HTTP/1.1 101") or accept != accept_key(self._key):
            self._fail_open(HandshakeError(status.decode(errors="replace")))
            self.abort()
            return
        self._upgraded = True
        if self.opened is not None and not self.opened.done():
            self.opened.set_result(None)
        self.on_open()

    def _parse(self, buf: bytearray) -> None:
        """Every complete frame in ``buf``, then what is left kept for the next read (one deletion per read)."""
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            key = b""
            if b1 & 0x80:  # a server must not mask, but a masked frame is still readable
                key, head = bytes(buf[pos + head:pos + head + 4]), head + 4
            if size - pos < head + n:
                break
            payload = bytes(buf[pos + head:pos + head + n])
            pos += head + n
            if key:
                payload = mask(payload, key)
            self._frame(b0 & 0x80 != 0, b0 & 0x0F, payload)
            if self.closed:
                return
        if pos:
            del buf[:pos]

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            if self.transport is not None and not self._close_sent:
                self.transport.write(encode_frame(PONG, payload))
        elif opcode == CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self._close_sent:
                self.close(code if code not in (1005, 1006) else 1000)
            self._finish(code)
            if self.transport is not None:
                self.transport.close()
        elif opcode in (TEXT, BINARY) and not fin:
            self._fragments = [payload] if opcode == TEXT else None
        elif opcode == CONTINUATION:
            if self._fragments is not None:
                self._fragments.append(payload)
                if fin:
                    whole, self._fragments = b"".join(self._fragments), None
                    self.on_text(whole)
        elif opcode == TEXT:
            self.on_text(payload)

    def _finish(self, code: int) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = code
            self.on_close(code)

    # ------------------------------------------------------------------ connecting

    async def connect(self, host: str, port: int, path: str, source: str | None = None,
                      rcvbuf: int | None = None) -> None:
        """Open the TCP connection (from ``source``, with a receive buffer of ``rcvbuf`` bytes) and upgrade it.

        One connection per object: a reconnect is a new object (a late ``connection_lost`` of the old
        transport must not touch the new one)."""
        assert self._request == b"" and self.transport is None, "one connection per object"
        loop = asyncio.get_running_loop()
        self._key = base64.b64encode(os.urandom(16))
        self._request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {self._key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        self.opened = loop.create_future()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if rcvbuf is not None:  # before connect(): the window scale is agreed in the handshake
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source is not None:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((source, 0))
            await loop.sock_connect(sock, (host, port))
            await loop.create_connection(lambda: self, sock=sock)
        except BaseException:
            sock.close()
            raise
        try:
            await self.opened
        except BaseException:
            self.abort()
            raise
