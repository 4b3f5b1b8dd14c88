"""The accounts API on real gunicorn workers (Redis layer, SQLite store): signup, login, logout, private rooms.

Every token the module issues is looked for in the server's logs at the end (access log, app and uvicorn
logs at DEBUG): none may appear.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from app.accounts.tokens import decode_token, issue_token
from app.settings import Settings

from ..chat.client import ChatClient, clients_on_distinct_workers
from ..live_server import TEST_PASSWORD, TEST_SECRET, LiveServer, live_server, service_env

ISSUED: list[str] = []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = service_env("redis", f"acc{secrets.token_hex(4)}", APP_LOG_LEVEL="DEBUG", APP_LOGIN_ATTEMPTS_PER_USERNAME="3")
    with live_server(env, workers=2, tmp_path=tmp_path_factory.mktemp("accounts")) as running:
        yield running
        logs = running.logs()
        assert "GET /ws" in logs or '"/ws"' in logs or "/ws" in logs, "the access log is on"
        leaked = [token[:12] for token in ISSUED if token in logs or token.split(".")[2] in logs]
        assert not leaked, f"tokens in the logs: {leaked}"


def call(server: LiveServer, method: str, path: str, body: Any = None, token: str | None = None,
         ) -> tuple[int, Message, Any]:
    """``(status, headers, body)`` of one JSON request."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, response.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, exc.headers, json.loads(raw) if raw else None


def signup(server: LiveServer, username: str, password: str = TEST_PASSWORD) -> str:
    status, _, body = call(server, "POST", "/api/signup", {"username": username, "password": password})
    assert status == 201, body
    token = str(body["token"])
    ISSUED.append(token)
    return token


def login(server: LiveServer, username: str, password: str = TEST_PASSWORD) -> str:
    status, _, body = call(server, "POST", "/api/login", {"username": username, "password": password})
    assert status == 200, body
    token = str(body["token"])
    ISSUED.append(token)
    return token


def test_signup_names_and_passwords(server: LiveServer) -> None:
    signup(server, "alice")
    assert call(server, "POST", "/api/signup", {"username": "ALICE", "password": "another one"})[0] == 409
    for reserved in ("system", "admin", "Root", "server"):
        status, _, body = call(server, "POST", "/api/signup", {"username": reserved, "password": TEST_PASSWORD})
        assert status == 422 and "reserved" in str(body), reserved
    status, _, body = call(server, "POST", "/api/signup", {"username": "shorty", "password": "1234567"})
    assert status == 422 and "at least 8" in str(body)
    assert call(server, "POST", "/api/signup", {"username": "a/b", "password": TEST_PASSWORD})[0] == 422


def test_impersonation_fails_and_both_failures_look_alike(server: LiveServer) -> None:
    signup(server, "victor")
    wrong = call(server, "POST", "/api/login", {"username": "victor", "password": "not his password"})
    unknown = call(server, "POST", "/api/login", {"username": "nobody-here", "password": "not his password"})
    assert wrong[0] == unknown[0] == 401 and wrong[2] == unknown[2] == {"detail": "wrong user name or password"}
    assert call(server, "POST", "/api/login", {"username": "victor"})[0] == 422  # no password, no token
    login(server, "Victor")  # names are case-insensitive at login


def test_failed_logins_are_throttled_with_retry_after(server: LiveServer) -> None:
    signup(server, "tess")
    for _ in range(3):
        assert call(server, "POST", "/api/login", {"username": "tess", "password": "guess-guess"})[0] == 401
    status, headers, body = call(server, "POST", "/api/login", {"username": "tess", "password": TEST_PASSWORD})
    assert status == 429 and int(headers["Retry-After"]) > 0 and "retry" in str(body)


async def test_logout_closes_the_sessions_sockets_on_every_worker_and_no_other(server: LiveServer) -> None:
    token, other = signup(server, "lou"), login(server, "lou")
    first, second = await clients_on_distinct_workers(server.ws_url, [token, token])
    kept = await ChatClient.connect(server.ws_url, other)
    assert first.welcome["session"] == second.welcome["session"] != kept.welcome["session"]
    assert call(server, "POST", "/api/logout", token=token)[0] == 204
    for client in (first, second):
        with pytest.raises(ConnectionClosed) as closed:
            await client.expect("never", timeout=10)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "logged out")
    assert call(server, "GET", "/api/rooms", token=token)[0] == 401
    with pytest.raises(ConnectionClosed) as refused:
        await ChatClient.connect(server.ws_url, token)
    assert refused.value.rcvd is not None and refused.value.rcvd.code == 1008
    await kept.send(type="ping")  # the user's other session goes on
    await kept.expect("pong")
    await kept.close()


async def test_a_socket_closes_with_4003_when_its_token_expires(server: LiveServer) -> None:
    settings = Settings(secret_key=TEST_SECRET)
    session = decode_token(settings, signup(server, "eve"))["sid"]
    client = await ChatClient.connect(server.ws_url, issue_token(settings, "eve", session, ttl=2))
    with pytest.raises(ConnectionClosed) as closed:
        await client.expect("never", timeout=15)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4003, "token expired")


async def test_a_direct_message_reaches_only_the_right_users_sockets(server: LiveServer) -> None:
    amy, ben, mal = signup(server, "amy"), signup(server, "ben"), signup(server, "mal")
    amy1, amy2 = await clients_on_distinct_workers(server.ws_url, [amy, amy])
    bens, mals = await ChatClient.connect(server.ws_url, ben), await ChatClient.connect(server.ws_url, mal)
    await bens.send(type="direct", to="amy", text="for amy")
    for client in (amy1, amy2):
        frame = await client.expect("direct")
        assert (frame["from"], frame["to"], frame["text"]) == ("ben", "amy", "for amy")
    await mals.send(type="ping")
    await mals.expect("pong")
    assert not [f for f in mals.seen if isinstance(f, dict) and f.get("type") == "direct"]
    for client in (amy1, amy2, bens, mals):
        await client.close()


async def test_private_rooms_are_checked_on_every_path(server: LiveServer) -> None:
    owner, guest, outsider = signup(server, "olive"), signup(server, "gil"), signup(server, "otto")
    status, _, body = call(server, "POST", "/api/rooms", {"name": "vault", "private": True}, token=owner)
    assert (status, body) == (201, {"name": "vault", "private": True, "owner": "olive"})
    assert call(server, "POST", "/api/rooms", {"name": "vault", "private": True}, token=guest)[0] == 409
    assert call(server, "POST", "/api/rooms", {"name": "vault2"})[0] == 401
    olive = await ChatClient.connect(server.ws_url, owner)
    await olive.join("vault")
    otto = await ChatClient.connect(server.ws_url, outsider)
    for frame in ({"type": "join", "room": "vault"}, {"type": "who", "room": "vault"}):
        await otto.send(**frame)
        error = await otto.expect("error")
        assert error["code"] == "forbidden" and "private" in error["detail"]
    await otto.send(type="rooms")
    assert "vault" not in [r["name"] for r in (await otto.expect("rooms"))["rooms"]]
    for method, path, body in (("GET", "/api/rooms/vault/members", None), ("GET", "/api/rooms/vault/messages", None),
                               ("POST", "/api/rooms/vault/messages", {"text": "let me in"})):
        assert call(server, method, path, body, token=outsider)[0] == 403, path
    assert "vault" not in [r["name"] for r in call(server, "GET", "/api/rooms", token=outsider)[2]]
    assert call(server, "POST", "/api/rooms/vault/invites", {"username": "otto"}, token=guest)[0] == 403
    assert call(server, "POST", "/api/rooms/vault/invites", {"username": "ghost"}, token=owner)[0] == 404
    assert call(server, "POST", "/api/rooms/vault/invites", {"username": "GIL"}, token=owner)[2] == {
        "room": "vault", "username": "gil"}
    gil = await ChatClient.connect(server.ws_url, guest)
    await gil.join("vault")
    assert call(server, "POST", "/api/rooms/vault/messages", {"text": "over http"}, token=guest)[0] == 202
    for client in (olive, gil):
        assert (await client.expect("message", lambda f: f["text"] == "over http"))["from"] == "gil"
    assert call(server, "GET", "/api/rooms/vault/members", token=guest)[0] == 200
    assert "vault" in [r["name"] for r in call(server, "GET", "/api/rooms", token=guest)[2]]
    for client in (olive, otto, gil):
        await client.close()


def test_unauthenticated_reads_are_refused(server: LiveServer) -> None:
    for path in ("/api/rooms", "/api/rooms/lobby/members", "/metrics"):
        assert call(server, "GET", path)[0] == 401, path


async def test_public_posts_need_the_sender_in_the_room(server: LiveServer) -> None:
    token = signup(server, "poster")
    assert call(server, "POST", "/api/rooms/square/messages", {"text": "hi"}, token=token)[0] == 403
    client = await ChatClient.connect(server.ws_url, token)
    await client.join("square")
    async with asyncio.timeout(15):  # the request may reach the worker that hears of the join a moment later
        while call(server, "POST", "/api/rooms/square/messages", {"text": "hi"}, token=token)[0] == 403:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    assert (await client.expect("message"))["text"] == "hi"
    await client.close()


def test_oidc_mode_has_no_local_accounts(tmp_path: Path) -> None:
    env = service_env("inmemory", f"oidc{secrets.token_hex(4)}", APP_AUTH_MODE="oidc",
                      APP_OIDC_ISSUER="http://127.0.0.1:9", APP_OIDC_AUDIENCE="chat")
    with live_server(env, workers=1, tmp_path=tmp_path) as oidc:
        for path in ("/api/signup", "/api/login"):
            status, _, body = call(oidc, "POST", path, {"username": "x", "password": TEST_PASSWORD})
            assert status == 404 and "identity provider" in str(body), path
