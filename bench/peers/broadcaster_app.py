"""The encode/broadcaster peer of bench/ws_load.py: a minimal FastAPI chat over Redis pub/sub.

    gunicorn -k uvicorn.workers.UvicornWorker -w 2 bench.peers.broadcaster_app:app

Protocol (a subset of ours): ``{"type": "join", "room"}`` -> ``{"type": "joined", "room"}``;
``{"type": "message", "room", "text"}`` -> every member gets ``{"type": "message", "id", "room", "from", "text",
"ts"}``.
Env: ``BENCH_REDIS_URL``, ``BENCH_PREFIX`` (prefix of the Redis channels, unique per run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from broadcaster import Broadcast
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_PREFIX", "wsload")
broadcast = Broadcast(REDIS_URL)
#: broadcaster 0.3.1's ``subscribe`` races: two first subscribers of one channel joining at once both see no
#: subscriber set, and the second replaces the first's, which then never gets a message. Joins are serialised.
subscribe_lock = asyncio.Lock()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await broadcast.connect()
    yield
    await broadcast.disconnect()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.websocket("/ws")
async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    user = uuid.uuid4().hex[:8]
    rooms: dict[str, asyncio.Task[None]] = {}

    async def relay(room: str, subscribed: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            async with subscribe_lock:
                subscriber = await stack.enter_async_context(broadcast.subscribe(channel=f"{PREFIX}:{room}"))
            subscribed.set()
            async for event in subscriber:
                await websocket.send_text(event.message)

    try:
        while True:
            frame = await websocket.receive_json()
            room = str(frame.get("room", ""))
            if frame.get("type") == "join" and room not in rooms:
                subscribed = asyncio.Event()
                rooms[room] = asyncio.create_task(relay(room, subscribed))
                await subscribed.wait()
                await websocket.send_json({"type": "joined", "room": room})
            elif frame.get("type") == "message" and room in rooms:
                message = {"type": "message", "id": uuid.uuid4().hex, "room": room, "from": user,
                           "text": frame["text"], "ts": time.time()}
                await broadcast.publish(channel=f"{PREFIX}:{room}", message=json.dumps(message))
    except WebSocketDisconnect:
        pass
    finally:
        for task in rooms.values():
            task.cancel()
        for task in rooms.values():
            with contextlib.suppress(BaseException):
                await task
