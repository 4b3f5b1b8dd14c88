"""The redis and nats stacks' topology run directly, with their credentials: a private broker that requires
a password, real gunicorn workers in production mode that reach it through a URL carrying that password,
and no log line or error response that shows the password or the secret key."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..brokers import installed_backends
from ..chat.client import clients_on_distinct_workers
from ..live_server import BROKER_ENV, free_port, live_server, service_env

pytestmark = pytest.mark.slow


def redis_cli(port: int, *args: str, password: str | None = None) -> str:
    env = {**os.environ, "REDISCLI_AUTH": password} if password else {k: v for k, v in os.environ.items()
                                                                     if k != "REDISCLI_AUTH"}
    done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], env=env,
                          capture_output=True, text=True, timeout=5, check=False)
    return done.stdout.strip()


def require_binary(name: str) -> None:
    if shutil.which(name) is None:
        message = f"{name} is not installed"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


def nats_info(port: int) -> str:
    """The INFO line a NATS server greets every client with (it says whether auth is required)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        return sock.recv(4096).decode(errors="replace")


@contextlib.contextmanager
def private_broker(backend: str, tmp: Path, password: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server (``--requirepass``) or nats-server (``--user``/``--pass``) of this test's own on a free
    port, and the URL the app reaches it by; stopped afterwards (the shared brokers are not touched)."""
    port = free_port()
    if backend == "redis":
        require_binary("redis-server")
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp), "--save", "",
                "--appendonly", "no", "--requirepass", password]
        url = f"redis://:{password}@127.0.0.1:{port}/0"
    else:
        require_binary("nats-server")
        args = ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp / "nats"),
                "--user", "chat", "--pass", password]
        url = f"nats://chat:{password}@127.0.0.1:{port}"
    with (tmp / f"{backend}.log").open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not ready(backend, port, password):
            assert process.poll() is None and time.monotonic() < deadline, (tmp / f"{backend}.log").read_text()
            time.sleep(0.05)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


def ready(backend: str, port: int, password: str) -> bool:
    if backend == "redis":
        return redis_cli(port, "ping", password=password) == "PONG"
    try:
        return '"auth_required":true' in nats_info(port)
    except OSError:
        return False


def refuses_without_password(backend: str, url: str) -> bool:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    if backend == "redis":
        return "NOAUTH" in redis_cli(port, "ping")
    return '"auth_required":true' in nats_info(port)


@pytest.mark.parametrize("backend", ["redis", "nats"])
async def test_chat_over_a_password_protected_broker_leaks_no_secret(backend: str, tmp_path: Path, prefix: str) -> None:
    if backend not in installed_backends():
        pytest.skip(f"the {backend} backend is not kept in this project")
    password, secret = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
    with private_broker(backend, tmp_path, password) as (url, broker):
        assert refuses_without_password(backend, url), "the private broker must require the password"
        env = service_env(backend, prefix, **{BROKER_ENV[backend]: url}, APP_ENVIRONMENT="production",
                          APP_SECRET_KEY=secret, APP_LOG_LEVEL="DEBUG",
                          APP_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}")
        with live_server(env, workers=2, tmp_path=tmp_path) as server:
            token = server.login("vault-user")
            first, second = await clients_on_distinct_workers(server.ws_url, [token, token], origin=server.url)
            await first.join("vault")
            await second.join("vault")
            await second.send(type="message", room="vault", text="behind a password")
            assert (await first.expect("message"))["text"] == "behind a password"
            for client in (first, second):
                await client.close()
            assert server.get("/docs")[0] == 404 and server.get("/openapi.json")[0] == 404  # production
            assert server.get("/readyz")[0] == 200
            broker.terminate()  # the broker goes away: its errors name the address, never the password
            broker.wait(10)
            status, body = server.get("/readyz")
            assert password not in str(body), body
            assert status == 503 or backend == "nats", body  # nats-py buffers the send through its reconnect
        logs = server.logs()
    assert "WebSocket /ws" in logs, "the server logged no connection: the check below would prove nothing"
    for line in logs.splitlines():
        assert password not in line, f"the {backend} password reached the log: {line[:200]}"
        assert secret not in line, f"the secret key reached the log: {line[:200]}"
