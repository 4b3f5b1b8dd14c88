"""Rate limits (frames per connection, handshakes per address) and the image check of binary shares."""

from __future__ import annotations

import time


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class AddressRate:
    """New sockets per client address, one token bucket each (per worker; the least recently used are forgotten)."""

    def __init__(self, rate: float, burst: int, max_addresses: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_addresses = max_addresses
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, address: str) -> bool:
        bucket = self._buckets.pop(address, None) or TokenBucket(self.rate, self.burst)
        self._buckets[address] = bucket  # most recent last
        if len(self._buckets) > self.max_addresses:
            del self._buckets[next(iter(self._buckets))]
        return bucket.allow()


#: The magic bytes each image type the protocol accepts begins with.
IMAGE_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}


def image_matches(mime: str, data: bytes) -> bool:
    """``data`` starts like a ``mime`` image (WebP: a RIFF container of type WEBP)."""
    if mime == "image/webp":
        return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    return data.startswith(IMAGE_MAGIC.get(mime, ()))
