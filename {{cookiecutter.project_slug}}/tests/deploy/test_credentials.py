"""The redis stack's topology run directly, with its credentials: a private redis-server that requires a
password, real gunicorn workers in production mode that reach it through a URL carrying that password,
and no log line or error response that shows the password or the secret key."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..brokers import installed_backends
from ..chat.client import clients_on_distinct_workers
from ..live_server import free_port, live_server, service_env

pytestmark = pytest.mark.slow


def redis_cli(port: int, *args: str, password: str | None = None) -> str:
    env = {**os.environ, "REDISCLI_AUTH": password} if password else {k: v for k, v in os.environ.items()
                                                                     if k != "REDISCLI_AUTH"}
    done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], env=env,
                          capture_output=True, text=True, timeout=5, check=False)
    return done.stdout.strip()


@contextlib.contextmanager
def private_redis(tmp: Path, password: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """redis-server on a free port with ``--requirepass``, stopped afterwards (the shared 6379 is not touched)."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    with (tmp / "redis.log").open("wb") as log:
        process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp),
                                    "--save", "", "--appendonly", "no", "--requirepass", password],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while redis_cli(port, "ping", password=password) != "PONG":
            assert process.poll() is None and time.monotonic() < deadline, (tmp / "redis.log").read_text()
            time.sleep(0.05)
        yield port, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


async def test_chat_over_a_password_protected_redis_leaks_no_secret(tmp_path: Path, prefix: str) -> None:
    if "redis" not in installed_backends():
        pytest.skip("the redis backend is not kept in this project")
    password, secret = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
    with private_redis(tmp_path, password) as (port, redis):
        assert "NOAUTH" in redis_cli(port, "ping"), "the private server must refuse a client without the password"
        env = service_env("redis", prefix, FASTAPI_WEBSOCKETS_REDIS_URL=f"redis://:{password}@127.0.0.1:{port}/0",
                          APP_ENVIRONMENT="production", APP_SECRET_KEY=secret, APP_LOG_LEVEL="DEBUG",
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
            redis.terminate()  # the broker goes away: its errors name the address, never the password
            redis.wait(10)
            status, body = server.get("/readyz")
            assert status == 503 and password not in str(body), body
        logs = server.logs()
    assert "vault-user" in logs or "GET" in logs, "the server logged nothing: the check below would prove nothing"
    for line in logs.splitlines():
        assert password not in line, f"the Redis password reached the log: {line[:200]}"
        assert secret not in line, f"the secret key reached the log: {line[:200]}"
