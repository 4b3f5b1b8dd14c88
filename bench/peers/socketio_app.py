"""The python-socketio peer of bench/ws_load.py: rooms over AsyncRedisManager, a relaying ``chat`` event.

    gunicorn -k uvicorn.workers.UvicornWorker -w 2 bench.peers.socketio_app:app

Env: ``BENCH_REDIS_URL``, ``BENCH_PREFIX`` (the Redis pub/sub channel, unique per run).
"""

from __future__ import annotations

import inspect
import os
import time
import uuid
from typing import Any

import socketio

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_PREFIX", "wsload")

manager = socketio.AsyncRedisManager(REDIS_URL, channel=f"{PREFIX}-socketio")
# WebSocket only: with several workers, long-polling would need sticky sessions.
sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, transports=["websocket"],
                           cors_allowed_origins="*")


@sio.event
async def join(sid: str, data: dict[str, Any]) -> str:
    result = sio.enter_room(sid, data["room"])
    if inspect.isawaitable(result):
        await result
    return "ok"


@sio.event
async def chat(sid: str, data: dict[str, Any]) -> None:
    room = data["room"]
    await sio.emit("message", {"type": "message", "id": uuid.uuid4().hex, "room": room, "from": sid,
                               "text": data["text"], "ts": time.time()}, room=room)


async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


app = socketio.ASGIApp(sio, other_asgi_app=health)
