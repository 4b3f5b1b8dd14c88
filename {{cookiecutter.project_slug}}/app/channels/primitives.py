"""The broker primitives a backend implements under :class:`app.channels.base.BaseChannelLayer`.

The public API (validation, serialization, process-local channels, groups per process) lives in
``base.py`` once; a backend only moves bytes between processes with these methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable


class BrokerPrimitives(ABC):
    """What a backend provides; every method gets and returns already-serialized ``bytes``."""

    @abstractmethod
    async def _send(self, channel: str, data: bytes) -> None:
        """Deliver to a named channel, or to another process's inbox for a ``!`` channel
        (wrap with ``_channel_entry``). Raise ``ChannelFull`` when over capacity."""

    @abstractmethod
    async def _receive(self, channel: str) -> bytes | None:
        """Pop one message of a named channel, waiting a bounded time; ``None`` on timeout."""

    @abstractmethod
    async def _consume_inbox(self, deliver: Callable[[bytes], None]) -> None:
        """Feed every entry of this process's inbox to ``deliver``, forever."""

    @abstractmethod
    async def _group_join(self, group: str) -> None:
        """Make this process receive ``group``'s messages (its first local member joined)."""

    @abstractmethod
    async def _group_leave(self, group: str) -> None:
        """Stop receiving ``group``'s messages (its last local member left)."""

    async def _settle(self) -> None:  # noqa: B027 - optional hook
        """Wait until reads whose receive left have put back what they took (brokers whose reads
        complete after a cancel), so the next read of a channel still finds its oldest message first."""

    async def _group_refresh(self, groups: list[str]) -> None:  # noqa: B027 - optional hook
        """Renew this process's membership lease of ``groups`` (brokers without leases skip it)."""

    @abstractmethod
    async def _group_add_channel(self, group: str, channel: str) -> None:
        """Add a named channel (or another process's channel) to ``group`` itself."""

    @abstractmethod
    async def _group_discard_channel(self, group: str, channel: str) -> None: ...

    @abstractmethod
    async def _group_send(self, group: str, data: bytes) -> None:
        """Deliver ``_group_entry(group, data)`` once to every *other* member process's inbox,
        and ``data`` to every channel added with ``_group_add_channel``.

        This process's own members are not the backend's business: ``group_send`` hands them the
        message after this returns (so a failed send reaches no one here either)."""

    @abstractmethod
    async def _flush(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...
