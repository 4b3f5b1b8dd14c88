"""Broker object names and queue arguments, for ``queue_prefix`` Q.

* ``Q.inbox.<process>``: a process's inbox (exclusive: it dies with the connection).
* ``Q.channel.<name>``: a named channel.
* ``Q.member.<group>/<channel>``: a named (or another process's) channel added to a group.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ...exceptions import ConfigurationError

_AMQP_NAME = re.compile(r"[a-zA-Z0-9\-_.:]{1,150}")


def check_amqp_name(key: str, name: str | None) -> str | None:
    """``name`` if AMQP accepts it (None passes), else a ConfigurationError naming ``key``."""
    if name is not None and not _AMQP_NAME.fullmatch(name):
        raise ConfigurationError(f"{key} {name!r} is not a valid AMQP name: use letters, digits and -_.:")
    return name


def text(value: object) -> str | None:
    """A header value as str (AMQP tables may carry bytes)."""
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


class QueueNames:
    def __init__(self, queue_prefix: str) -> None:
        self.prefix = queue_prefix

    def channel(self, channel: str) -> str:
        return f"{self.prefix}.channel.{channel}"

    def inbox(self, process: str) -> str:
        return f"{self.prefix}.inbox.{process}"

    def member(self, group: str, channel: str) -> str:
        # AMQP names allow no '!', and '/', '#' and '@' occur in no channel or group name
        name = f"{self.prefix}.member.{group}/{channel.replace('!', '#')}"
        if len(name) > 255:  # the AMQP limit: shorten the group part, keep the channel (it is parsed back)
            digest = hashlib.sha1(group.encode(), usedforsecurity=False).hexdigest()
            name = f"{self.prefix}.member.@{digest}/{channel.replace('!', '#')}"
        return name

    @staticmethod
    def member_channel(queue: str) -> str | None:
        """The channel a membership queue dead-letters for (from its name), or None."""
        return queue.rpartition("/")[2].replace("#", "!") if "/" in queue else None


def named_arguments(capacity: int, *, quorum: bool, message_ttl: int | None,
                    queue_expiry: int | None) -> dict[str, Any]:
    """Arguments of a named channel's queue: every process must declare the same."""
    # a quorum queue rejects only once it holds MORE than x-max-length, and applies the limit
    # asynchronously: exact for sequential sends, concurrent ones in flight may overshoot it
    arguments: dict[str, Any] = {"x-max-length": capacity - 1 if quorum else capacity, "x-overflow": "reject-publish"}
    if message_ttl is not None:
        arguments["x-message-ttl"] = message_ttl
    if queue_expiry is not None:
        arguments["x-expires"] = queue_expiry
    if quorum:
        arguments["x-queue-type"] = "quorum"
    return arguments
