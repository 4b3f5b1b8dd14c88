"""A frame that meets a store (or broker) failure closes its socket with 1013 (reconnect), logged in one line;
a slow token check does not count against the client's auth deadline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from starlette.websockets import WebSocketDisconnect

from app.chat import gate
from app.main import create_app
from app.settings import Settings

from ..live_server import TEST_SECRET


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "inmemory")
    settings = Settings(secret_key=TEST_SECRET, environment="test", auth_timeout_seconds=0.5,
                        database_url=f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}")  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as running:
        yield running


def token_of(client: TestClient, name: str) -> str:
    response = client.post("/api/signup", json={"username": name, "password": "correct horse battery"})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def test_a_store_failure_in_a_join_closes_with_1013(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    token = token_of(client, "busy")
    state: Any = client.app.state  # type: ignore[attr-defined]

    async def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT …", {}, Exception("database is locked"))

    state.chat.store.recover = down
    with caplog.at_level(logging.WARNING), client.websocket_connect("/ws") as socket:
        socket.send_json({"type": "auth", "token": token})
        assert socket.receive_json()["type"] == "welcome"
        socket.send_json({"type": "join", "room": "lobby", "since": 3})
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                socket.receive_json()
    assert closed.value.code == 1013
    lines = [r for r in caplog.records if "closing a socket with 1013" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None and "OperationalError" in lines[0].getMessage()


def test_a_slow_token_check_is_not_the_clients_timeout(client: TestClient) -> None:
    """APP_AUTH_TIMEOUT_SECONDS is 0.5 here; the check takes 1 s (a storm's queue): the socket is welcomed."""
    token = token_of(client, "patient")
    state: Any = client.app.state  # type: ignore[attr-defined]
    verify = state.accounts.verify

    async def slow(token: str) -> Any:
        await asyncio.sleep(1.0)
        return await verify(token)

    state.accounts.verify = slow
    with client.websocket_connect("/ws") as socket:
        socket.send_json({"type": "auth", "token": token})
        assert socket.receive_json()["type"] == "welcome"


def test_a_handshake_that_waits_too_long_for_the_store_is_told_to_come_back(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every turn at the store is taken (a storm) for longer than STORE_WAIT_SECONDS: 1013, not an endless queue."""
    token = token_of(client, "queued")
    monkeypatch.setattr(gate, "STORE_WAIT_SECONDS", 0.3)
    state: Any = client.app.state  # type: ignore[attr-defined]
    state.chat.store_gate = asyncio.Semaphore(0)  # nobody gets a turn
    with client.websocket_connect("/ws") as socket:
        socket.send_json({"type": "auth", "token": token})
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert closed.value.code == 1013
