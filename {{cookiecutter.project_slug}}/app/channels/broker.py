"""Chores every broker backend shares, written once: its environment model, value checks,
error translation, password redaction and reconnect backoff.

A backend package (``backends/<broker>/``) keeps only what is about its broker.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import field_validator
from pydantic_settings import BaseSettings, NoDecode

from .exceptions import BrokerUnavailable, ConfigurationError

_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


class BrokerEnv(BaseSettings):
    """``FASTAPI_WEBSOCKETS_<BROKER>_*`` fields every backend reads, named like its CONFIG keys.

    ``channel_expiry`` is the seed's name for ``expiry``; both are accepted. A backend subclasses
    this with the fields of its own (``url``, ``servers``, ``dsn`` ...).
    """

    prefix: str | None = None
    capacity: int | None = None
    inbox_capacity: int | None = None
    expiry: float | None = None
    channel_expiry: float | None = None
    group_expiry: float | None = None
    receive_timeout: float | None = None
    max_message_size: int | None = None
    #: Comma-separated; the first key encrypts, every key decrypts (rotate by putting the new one first).
    symmetric_encryption_keys: Annotated[list[str], NoDecode] | None = None

    @field_validator("symmetric_encryption_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            keys = [key.strip() for key in value.split(",") if key.strip()]
            return keys or None
        return value


def require_positive(**values: float | int | None) -> None:
    """Raise ``ConfigurationError`` naming the first key whose value is not positive (``None`` passes)."""
    for key, value in values.items():
        if value is not None and not value > 0:
            raise ConfigurationError(f"{key} must be positive, got {value!r}")


def redact_url(url: str) -> str:
    """``url`` (or a libpq ``key=value`` DSN) without its password, for logs and error messages."""
    if "://" not in url:
        return _KEYWORD_PASSWORD.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:  # not a URL we can take apart: show nothing of it that could be a secret
        return "<unparsable address>"
    if not password:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{port}" if port else "")
    return parts._replace(netloc=netloc).geturl()


@contextlib.contextmanager
def broker_errors(where: str, *errors: type[BaseException]) -> Iterator[None]:
    """Turn the broker client's connection errors (and ``OSError``) into ``BrokerUnavailable``
    naming ``where`` (already redacted); everything else passes through."""
    caught: tuple[type[BaseException], ...] = (OSError, TimeoutError, *errors)
    try:
        yield
    except BrokerUnavailable:
        raise
    except caught as exc:
        raise BrokerUnavailable(f"{where} is unavailable: {type(exc).__name__}: {exc}") from exc


class Backoff:
    """Reconnect delays: ``first``, doubling up to ``cap``, with ±20 % jitter so that the workers
    of a fleet do not retry in step. ``reset()`` after a success."""

    def __init__(self, first: float = 0.05, cap: float = 2.0) -> None:
        require_positive(first=first, cap=cap)
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = self.first
