"""The gunicorn worker class (production: ``gunicorn -c gunicorn.conf.py app.main:app``), which shuts down gracefully.

Development runs ``uvicorn app.main:app --reload --ws websockets-sansio`` instead: one process, no drain.

uvicorn closes every WebSocket with 1012 the moment it shuts down. ``GracefulServer`` first
stops accepting, then lets the app close its sockets with 1001 (going away) and leave its
groups, so clients reconnect to another worker at once and nothing is left behind.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import uvicorn
from gunicorn.arbiter import Arbiter
from uvicorn_worker import UvicornWorker

from .channels._compat import lean_websocket_protocol
from .lifecycle import run_before_shutdown
from .logs import quiet_uvicorn
from .settings import get_settings


def ws_limits() -> dict[str, Any]:
    """uvicorn drops a frame over the app's largest frame limit before buffering it, and inflates nothing:
    with per-message deflate, a 16 KiB compressed frame could grow to 16 MiB in memory before the app's check."""
    settings = get_settings()
    return {"ws_max_size": max(settings.max_text_frame_bytes, settings.max_binary_frame_bytes),
            "ws_per_message_deflate": False}


class GracefulServer(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        quiet_uvicorn(get_settings())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await run_before_shutdown()
        await super().shutdown(sockets)


class ChatWorker(UvicornWorker):
    """gunicorn's worker class (``worker_class`` in gunicorn.conf.py)."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "http": "auto", "ws": lean_websocket_protocol(), "lifespan": "on",
                                     **ws_limits()}

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = GracefulServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

