"""Each history store keeps the newest N messages per room, shared by every worker that asks."""

from __future__ import annotations

import pytest

from app.chat.history import InProcessHistory, make_history

from ..brokers import URLS, installed_backends, require_broker

ENV_URL = {
    "redis": "FASTAPI_WEBSOCKETS_REDIS_URL",
    "postgresql": "FASTAPI_WEBSOCKETS_POSTGRESQL_DSN",
    "nats": "FASTAPI_WEBSOCKETS_NATS_SERVERS",
}


def message(n: int, room: str = "lobby") -> dict[str, object]:
    return {"type": "chat.message", "id": f"m{n}", "room": room, "from": "a", "text": f"text {n}", "ts": float(n)}


@pytest.mark.parametrize("backend", [b for b in ("redis", "postgresql", "nats") if b in installed_backends()])
async def test_broker_store_keeps_the_newest_per_room(backend: str, prefix: str) -> None:
    require_broker(backend)
    environ = {ENV_URL[backend]: URLS[backend], f"FASTAPI_WEBSOCKETS_{backend.upper()}_PREFIX": prefix}
    writer, reader = make_history(backend, 5, environ), make_history(backend, 5, environ)
    assert not isinstance(writer, InProcessHistory)
    try:
        assert await reader.recent("lobby") == []
        for n in range(8):
            await writer.on_sent("lobby", message(n))
        await writer.on_sent("other", message(99, "other"))
        assert [m["id"] for m in await reader.recent("lobby")] == ["m3", "m4", "m5", "m6", "m7"]
        assert [m["id"] for m in await reader.recent("other")] == ["m99"]
    finally:
        await drop(writer)
        await writer.close()
        await reader.close()


async def drop(store: object) -> None:
    """Leave nothing behind on the shared brokers."""
    from app.chat.history import NATSHistory, PostgreSQLHistory, RedisHistory

    if isinstance(store, RedisHistory):
        keys = [key async for key in store.client.scan_iter(f"{store.prefix}:*")]
        if keys:
            await store.client.delete(*keys)
    elif isinstance(store, PostgreSQLHistory):
        await (await store._connection_pool()).execute(f"DROP TABLE IF EXISTS {store.table}")
    elif isinstance(store, NATSHistory):
        await (await store._jetstream()).delete_stream(store.stream)


async def test_in_process_history_dedupes_deliveries() -> None:
    history = InProcessHistory(3)
    for n in range(5):
        for _ in range(4):  # four local sockets in the room each deliver it
            history.on_delivered("lobby", message(n))
    assert [m["id"] for m in await history.recent("lobby")] == ["m2", "m3", "m4"]
