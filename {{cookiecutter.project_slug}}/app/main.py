"""The FastAPI application: the chat page, the WebSocket, the HTTP API."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from . import lifecycle
from .chat.api import router
from .chat.consumer import ChatConsumer
from .chat.service import ChatService
from .logs import configure_logging
from .settings import Settings, get_settings

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await ChatService.start(settings)
        app.state.chat = service

        async def close_sockets() -> None:
            await service.stop_connections()

        lifecycle.before_shutdown.append(close_sockets)
        try:
            yield
        finally:
            lifecycle.before_shutdown.remove(close_sockets)
            await service.stop()

    # The API's docs and schema are for developers: off in production (the Docker image's default).
    docs = settings.environment != "production"
    app = FastAPI(title="Chat", lifespan=lifespan, docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None, openapi_url="/openapi.json" if docs else None)
    app.include_router(router)
    if importlib.util.find_spec(".worker", __package__):  # the Celery jobs API (use_celery=yes)
        app.include_router(importlib.import_module(".worker.api", __package__).router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.websocket("/ws")
    async def chat_socket(websocket: WebSocket) -> None:
        await ChatConsumer(app.state.chat)(websocket)

    return app


app = create_app()
