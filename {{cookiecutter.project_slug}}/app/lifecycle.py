"""Hooks the server runs when it starts shutting down, before it drops open sockets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

before_shutdown: list[Callable[[], Awaitable[None]]] = []


async def run_before_shutdown() -> None:
    for hook in list(before_shutdown):
        await hook()
