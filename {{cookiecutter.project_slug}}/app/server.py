"""uvicorn and gunicorn entry points that shut down gracefully.

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

from .lifecycle import run_before_shutdown


class GracefulServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await run_before_shutdown()
        await super().shutdown(sockets)


class ChatWorker(UvicornWorker):
    """gunicorn's worker class (``worker_class`` in gunicorn.conf.py)."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "http": "auto", "ws": "websockets-sansio", "lifespan": "on"}

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = GracefulServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


def main() -> None:
    """``python -m app``: one process, for development and the in-memory layer."""
    import argparse

    parser = argparse.ArgumentParser(description="Serve the chat in one process.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    config = uvicorn.Config("app.main:app", host=args.host, port=args.port, ws="websockets-sansio", lifespan="on")
    GracefulServer(config).run()
