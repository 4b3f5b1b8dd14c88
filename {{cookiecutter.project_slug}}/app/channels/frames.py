"""Server WebSocket frames (RFC 6455 section 5.2), made once and written to every socket they go to.

A server's frames are not masked, so a room message's frame is the same bytes for all its
receivers: ``frame_of`` remembers the last few hundred small ones, keyed by the text or bytes
themselves (a message encoded once for a room is one object: the lookup is by identity first).
"""

from __future__ import annotations

import struct

_TEXT, _BINARY = 0x81, 0x82  # FIN + opcode
_CACHE_SIZE = 256
_CACHE_MAX_BYTES = 8192  # at most 2 MiB remembered; a larger frame is made for each socket
_cache: dict[str | bytes, bytes] = {}


def frame_of(data: str | bytes) -> bytes:
    """The whole frame carrying ``data``: a text frame for ``str``, a binary one for ``bytes``."""
    if len(data) > _CACHE_MAX_BYTES:
        return encode(data)
    frame = _cache.get(data)
    if frame is None:
        frame = _cache[data] = encode(data)
        if len(_cache) > _CACHE_SIZE:
            del _cache[next(iter(_cache))]
    return frame


def encode(data: str | bytes) -> bytes:
    payload = data.encode() if isinstance(data, str) else data
    first = _TEXT if isinstance(data, str) else _BINARY
    size = len(payload)
    if size < 126:
        header = bytes((first, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload
