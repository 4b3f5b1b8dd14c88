"""Failed logins counted per user name and per client address in the store, so every worker shares them.

A key that reached its limit of failures inside the window is refused (429) until the window
that began with its first failure ends; a successful login clears the user name's count.
"""

from __future__ import annotations

import math
import time

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from .models import LoginFailure


class LoginThrottle:
    def __init__(self, engine: AsyncEngine, per_username: int, per_address: int, window: float) -> None:
        self._session = async_sessionmaker(engine, expire_on_commit=False)
        self.limits = {"user": per_username, "addr": per_address}
        self.window = window

    @staticmethod
    def keys(username: str, address: str) -> list[str]:
        return [f"user:{username.lower()}", f"addr:{address}"]

    async def retry_after(self, username: str, address: str) -> int:
        """Seconds until a login may be tried again (0: now)."""
        now = time.time()
        wait = 0.0
        async with self._session() as db:
            for key in self.keys(username, address):
                row = await db.get(LoginFailure, key)
                if row is not None and now - row.window_start < self.window \
                        and row.count >= self.limits[key.split(":", 1)[0]]:
                    wait = max(wait, row.window_start + self.window - now)
        return math.ceil(wait)

    async def failed(self, username: str, address: str) -> None:
        try:
            await self._count(username, address)
        except IntegrityError:  # another worker counted the first failure of a key at the same moment
            await self._count(username, address)

    async def _count(self, username: str, address: str) -> None:
        now = time.time()
        async with self._session() as db:
            for key in self.keys(username, address):
                row = await db.get(LoginFailure, key, with_for_update=True)
                if row is None:
                    db.add(LoginFailure(key=key, window_start=now, count=1))
                elif now - row.window_start >= self.window:
                    row.window_start, row.count = now, 1
                else:
                    row.count += 1
            await db.commit()

    async def succeeded(self, username: str) -> None:
        async with self._session() as db:
            await db.execute(delete(LoginFailure).where(LoginFailure.key == self.keys(username, "")[0]))
            await db.commit()
