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
from starlette.types import Receive, Scope, Send

from . import error_reporting, lifecycle, telemetry
from .accounts.accounts import Accounts
from .accounts.api import router as accounts_router
from .accounts.rooms import RoomAccess
from .chat.api import router
from .chat.consumer import ChatConsumer
from .chat.limits import AddressRate
from .chat.service import ChatService
from .db.engine import make_engine
from .logs import configure_logging
from .settings import Settings, get_settings

STATIC = Path(__file__).parent / "static"


class ChatApp(FastAPI):
    """FastAPI, with ``/ws`` served before its middleware and routing.

    A WebSocket lives as long as its user stays: every layer of middleware and routing it passes
    through keeps a coroutine frame (and an exit stack) for that whole time, several KiB a socket
    at tens of thousands of sockets. The chat socket needs none of them, so it skips them. The route
    declared below still serves ``/ws`` under a ``root_path`` and documents it.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws" and not scope.get("root_path"):
            await self.chat_socket(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)

    async def chat_socket(self, websocket: WebSocket) -> None:
        state = self.state
        await state.consumer(state.chat, state.accounts, state.access, state.handshakes)(websocket)


def create_app(settings: Settings | None = None) -> ChatApp:
    settings = settings or get_settings()
    configure_logging(settings)
    telemetry.configure()
    error_reporting.configure()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await ChatService.start(settings)  # migrates the database first, once across workers
        # Accounts keep their own pool: sharing the store's (5 connections under a gate of 8) was measured
        # slower in a reconnect storm; one pool sized for both is left to do (STORE_GATE, app/chat/service.py).
        engine = make_engine(settings.database_url.get_secret_value())
        app.state.chat = service
        app.state.consumer = ChatConsumer.configured(settings)
        app.state.accounts = Accounts(settings, engine)
        app.state.access = RoomAccess(app.state.accounts.store, service.presence)
        rate = settings.handshake_rate_per_address
        app.state.handshakes = AddressRate(rate, max(1, int(rate * 10)))

        async def close_sockets() -> None:
            await service.stop_connections()

        lifecycle.before_shutdown.append(close_sockets)
        try:
            yield
        finally:
            lifecycle.before_shutdown.remove(close_sockets)
            await service.stop()
            await engine.dispose()
            telemetry.shutdown()
            error_reporting.flush()

    # The API's docs and schema are for developers: off in production (the Docker image's default).
    docs = settings.environment != "production"
    app = ChatApp(title="Chat", lifespan=lifespan, docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None, openapi_url="/openapi.json" if docs else None)
    telemetry.instrument_app(app)
    app.include_router(accounts_router)
    app.include_router(router)
    if importlib.util.find_spec(".worker", __package__):  # the Celery jobs API (use_celery=yes)
        app.include_router(importlib.import_module(".worker.api", __package__).router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.add_api_websocket_route("/ws", app.chat_socket)

    return app


app = create_app()
