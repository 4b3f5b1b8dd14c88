"""Start the real service (gunicorn with N workers, or one uvicorn process) for a test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .brokers import URLS

TEST_SECRET = "test-secret-" + "x" * 32
TEST_PASSWORD = "correct horse battery"
ROOT = Path(__file__).resolve().parent.parent
BROKER_ENV = {
    "redis": "FASTAPI_WEBSOCKETS_REDIS_URL",
    "postgresql": "FASTAPI_WEBSOCKETS_POSTGRESQL_DSN",
    "nats": "FASTAPI_WEBSOCKETS_NATS_SERVERS",
    "rabbitmq": "FASTAPI_WEBSOCKETS_RABBITMQ_URL",
}


def post_json(url: str, body: Any, token: str | None = None, timeout: float = 30) -> tuple[int, Any]:
    """One JSON POST: ``(status, decoded body)``."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def signup_and_token(base_url: str, username: str, password: str = TEST_PASSWORD) -> str:
    """Sign ``username`` up (or, when taken, log in) on the service at ``base_url``; the token."""
    status, body = post_json(f"{base_url}/api/signup", {"username": username, "password": password})
    if status == 409:
        status, body = post_json(f"{base_url}/api/login", {"username": username, "password": password})
    assert status in (200, 201), body
    return str(body["token"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(backend: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a service instance on ``backend``, namespaced by ``prefix``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTAPI_WEBSOCKETS_", "APP_"))}
    env.update({
        "FASTAPI_WEBSOCKETS_BACKEND": backend, "APP_ENVIRONMENT": "test", "APP_SECRET_KEY": TEST_SECRET,
        "APP_PRESENCE_INTERVAL_SECONDS": "1", "PYTHONUNBUFFERED": "1",
        # every test client comes from 127.0.0.1: the per-address handshake rate is raised where not tested
        "APP_HANDSHAKE_RATE_PER_ADDRESS": "1000", "APP_MAX_CONNECTIONS_PER_USER": "100",
    })
    if backend in BROKER_ENV:
        env[BROKER_ENV[backend]] = URLS[backend]
        env[f"FASTAPI_WEBSOCKETS_{backend.upper()}_PREFIX"] = prefix
    if backend == "postgresql":  # the shared test server allows 100 connections for every parallel test
        env["FASTAPI_WEBSOCKETS_POSTGRESQL_POOL_SIZE"] = "2"
    # the instance's own database (SQLite, WAL: every worker shares it), kept across restarts of the instance
    env["APP_DATABASE_URL"] = f"sqlite+aiosqlite:///{Path(tempfile.gettempdir()) / f'chat-{prefix}.db'}"
    env.update(extra)
    return env


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    workers: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def request(self, method: str, path: str, body: Any = None, token: str | None = None,
                timeout: float = 10) -> tuple[int, Any]:
        """One JSON request, with the bearer token when given: ``(status, decoded body)``."""
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post(self, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
        return self.request("POST", path, body, token)

    def text(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return str(response.read().decode())

    def login(self, username: str, password: str = TEST_PASSWORD) -> str:
        """A token of ``username``: signed up with ``password`` on first use, logged in after."""
        return signup_and_token(self.url, username, password)

    def worker_pids(self) -> list[int]:
        """gunicorn's worker processes (children of the master)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def wait_ready(server: LiveServer, timeout: float = 60, path: str = "/readyz") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.logs()[-3000:]}")
        with contextlib.suppress(OSError):
            if server.get(path)[0] == 200 and len(server.worker_pids()) >= server.workers:
                return
        time.sleep(0.2)
    raise TimeoutError(f"server not ready in {timeout}s:\n{server.logs()[-3000:]}")


@contextlib.contextmanager
def live_server(env: dict[str, str], workers: int = 3, tmp_path: Path | None = None,
                ready: str = "/readyz") -> Iterator[LiveServer]:
    """gunicorn with ``workers`` ChatWorker processes on a free loopback port; stopped afterwards."""
    port = free_port()
    log = (tmp_path or Path(os.environ.get("TMPDIR", "/tmp"))) / f"server-{port}.log"
    env = {**env, "WEB_CONCURRENCY": str(workers), "BIND": f"127.0.0.1:{port}", "GRACEFUL_TIMEOUT": "5"}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app.main:app"],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = LiveServer(process, port, log, workers, env)
    try:
        wait_ready(server, path=ready)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
