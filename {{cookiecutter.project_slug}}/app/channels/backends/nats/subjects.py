"""Channel and group names as NATS subject tokens and KV keys, and the names derived from a prefix.

NATS tokens may hold neither ``.`` (a subject separator) nor ``:``/``!`` in KV keys, so those are
escaped with ``=`` (which occurs in no channel or group name): reversible, so a watcher reads a
group's members back from the keys.
"""

from __future__ import annotations

import hashlib
import re

from ...exceptions import ConfigurationError

_ESCAPES = {".": "=d", ":": "=c", "!": "=x"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,200}")


def token(name: str) -> str:
    """One subject token for a channel or group name (reversible, KV-key safe)."""
    return re.sub(r"[.:!]", lambda m: _ESCAPES[m.group()], name)


def untoken(escaped: str) -> str:
    return re.sub(r"=[dcx]", lambda m: _UNESCAPES[m.group()], escaped)


def default_base(prefix: str) -> str:
    """``fastapi-websockets`` -> ``fastapi_websockets``; lossy prefixes get a hash suffix."""
    base = re.sub(r"[^A-Za-z0-9]", "_", prefix)
    if not re.fullmatch(r"[a-z0-9-]+", prefix):
        base += "_" + hashlib.sha256(prefix.encode()).hexdigest()[:8]
    return base


def check_stream_name(what: str, name: str) -> str:
    """A stream or bucket name NATS accepts, or a ConfigurationError naming the CONFIG key."""
    if not _STREAM_NAME.fullmatch(name):
        raise ConfigurationError(f"{what} {name!r} may hold only letters, digits, '-' and '_'")
    return name


def consumer_name(channel: str) -> str:
    """The durable pull consumer every process shares for one named channel."""
    digest = hashlib.sha256(channel.encode()).hexdigest()[:20]
    return f"ch_{re.sub(r'[^A-Za-z0-9_-]', '_', channel)[:40]}_{digest}"


class Subjects:
    """The subjects of one prefix: named channels, process inboxes, large bodies."""

    def __init__(self, prefix: str) -> None:
        self.root = token(prefix)

    def named(self, channel: str) -> str:
        return f"{self.root}.c.{token(channel)}"

    def inbox(self, process: str) -> str:
        return f"{self.root}.in.{process}"

    def blob(self, blob_id: str) -> str:
        return f"{self.root}.b.{blob_id}"
