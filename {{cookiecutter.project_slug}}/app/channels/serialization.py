"""The wire format: msgpack, an expiry stamp, optional Fernet encryption, a size limit."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from .exceptions import BackendNotInstalled, InvalidMessage, MessageTooLarge, SerializationError


def validate_message(message: object) -> dict[str, Any]:
    """Any mapping is a message, as in Channels and the seed; ``type`` matters only to a consumer
    that dispatches on it. Keys starting ``__asgi_`` are the layer's own."""
    if not isinstance(message, Mapping):
        raise InvalidMessage(f"message must be a dict, not {type(message).__name__}")
    if not isinstance(message, dict):
        message = dict(message)
    for key in message:
        if isinstance(key, str) and key.startswith("__asgi_"):
            raise InvalidMessage(f"message key {key!r} is reserved")
    return message


class Serializer:
    """Packs ``(expires_at, message)``; bytes values survive, unknown types are an error."""

    def __init__(self, max_message_size: int, symmetric_encryption_keys: Sequence[str | bytes] | None = None):
        self.max_message_size = max_message_size
        self._crypter = _make_crypter(symmetric_encryption_keys) if symmetric_encryption_keys else None

    def dumps(self, message: dict[str, Any], ttl: float) -> bytes:
        try:
            data: bytes = msgpack.packb([time.time() + ttl, message], use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"message of type {message.get('type')!r} cannot be serialized: {exc}") from exc
        if self._crypter is not None:
            data = self._crypter.encrypt(data)
        if len(data) > self.max_message_size:
            raise MessageTooLarge(
                f"message of type {message.get('type')!r} is {len(data)} bytes serialized,"
                f" over max_message_size={self.max_message_size}"
            )
        return data

    def loads(self, data: bytes) -> tuple[float, dict[str, Any]]:
        """Return ``(expires_at, message)``."""
        if self._crypter is not None:
            data = self._crypter.decrypt(data)
        expires_at, message = msgpack.unpackb(data, raw=False)
        return expires_at, message


def _make_crypter(keys: Sequence[str | bytes]) -> Any:
    """A MultiFernet: the first key encrypts, every key decrypts (so keys can rotate)."""
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError as exc:
        raise BackendNotInstalled(
            "symmetric_encryption_keys needs the 'encryption' extra: pip install '.[encryption]'"
        ) from exc
    fernets = []
    for key in keys:
        raw = key.encode() if isinstance(key, str) else key
        fernets.append(Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw).digest())))
    return MultiFernet(fernets)
