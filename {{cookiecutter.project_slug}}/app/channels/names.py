"""Channel and group name rules (the Channels specification, plus ``:``)."""

from __future__ import annotations

import re

from .exceptions import InvalidChannelName

MAX_NAME_LENGTH = 99
_NAME = r"[a-zA-Z0-9\-_.:]"
_CHANNEL = re.compile(rf"{_NAME}+(?:!{_NAME}*)?")
_GROUP = re.compile(rf"{_NAME}+")


def _check(kind: str, name: object, pattern: re.Pattern[str]) -> str:
    if not isinstance(name, str):
        raise InvalidChannelName(f"{kind} name must be a str, not {type(name).__name__}: {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidChannelName(f"{kind} name {name!r} is longer than {MAX_NAME_LENGTH} characters")
    if not pattern.fullmatch(name):
        allowed = "ASCII letters, digits, '-', '_', '.', ':'" + (" and at most one '!'" if kind == "channel" else "")
        raise InvalidChannelName(f"invalid {kind} name {name!r}: use only {allowed}")
    return name


def validate_channel(name: object) -> str:
    return _check("channel", name, _CHANNEL)


def validate_group(name: object) -> str:
    return _check("group", name, _GROUP)


def is_process_local(channel: str) -> bool:
    """``prefix.process!token`` channels live in one process and are read only there."""
    return "!" in channel


def process_of(channel: str) -> str:
    """The process id of a process-local channel: the dotted part just before ``!``."""
    return channel.partition("!")[0].rpartition(".")[2]
