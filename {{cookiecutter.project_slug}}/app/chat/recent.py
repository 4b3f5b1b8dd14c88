"""A bounded memory of recently delivered message keys, for idempotent delivery to one connection."""

from __future__ import annotations

from collections.abc import Hashable


class RecentKeys:
    """The last ``size`` keys seen, oldest forgotten first.

    A Celery job that retries after a broker blip may send a message whose first attempt did reach
    the broker (the reply was lost): the layer delivers at least once, and the consumer drops the
    repeat by its key, so the client sees each job message exactly once.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._keys: dict[Hashable, None] = {}

    def first_time(self, key: Hashable) -> bool:
        """Remember ``key``; whether it was new."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self.size:
            del self._keys[next(iter(self._keys))]
        return True
