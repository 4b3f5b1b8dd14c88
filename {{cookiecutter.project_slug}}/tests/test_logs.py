"""Log lines: a token in a URL is redacted; uvicorn logs no line per WebSocket once a worker runs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from app.logs import RedactTokens

from .chat.client import ChatClient
from .live_server import live_server, service_env


def test_a_token_in_a_logged_url_is_redacted() -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
                               ("127.0.0.1:5000", "/ws?token=eyJ.secret.sig&x=1"), None)
    assert RedactTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "WebSocket /ws?token=[redacted]&x=1" [accepted]'


@pytest.mark.slow
async def test_a_running_worker_logs_no_line_per_socket(tmp_path: Path) -> None:
    """Twenty sockets come and go: the worker's log says its startup, and nothing per socket."""
    with live_server(service_env("inmemory", "quietlogs"), workers=1, tmp_path=tmp_path) as server:
        token = server.login("quiet")
        for _ in range(20):
            client = await ChatClient.connect(server.ws_url, token)
            await client.close()
        await asyncio.sleep(0.5)
        logs = server.logs()
    assert "Application startup complete." in logs
    assert '"WebSocket /ws"' not in logs and "connection open" not in logs
