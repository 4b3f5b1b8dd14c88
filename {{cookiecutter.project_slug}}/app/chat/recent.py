"""A bounded memory of recent keys (and values), oldest forgotten first."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any


class Recent:
    """The last ``size`` keys seen, each with a value.

    Two uses: a connection drops a job message it delivered already (a Celery retry after a
    broker blip may resend one whose first attempt did reach the broker: the layer delivers at
    least once, the client sees it once), and a worker encodes a room message once for all its
    receivers.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: dict[Hashable, Any] = {}

    def first_time(self, key: Hashable) -> bool:
        """Remember ``key``; whether it was new."""
        if key in self._items:
            return False
        self._remember(key, None)
        return True

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value remembered for ``key``, made (and remembered) the first time."""
        if key not in self._items:
            self._remember(key, make())
        return self._items[key]

    def _remember(self, key: Hashable, value: Any) -> None:
        self._items[key] = value
        if len(self._items) > self.size:
            del self._items[next(iter(self._items))]
