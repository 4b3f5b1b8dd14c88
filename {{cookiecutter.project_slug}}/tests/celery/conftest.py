"""A live service (gunicorn, 2 workers) and a real Celery worker on one backend, each test on its own queue."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..brokers import URLS, distributed_backends, require_broker
from ..live_server import LiveServer, live_server, service_env
from .processes import CeleryProcess, celery_worker


def stack_env(backend: str, prefix: str, **extra: str) -> dict[str, str]:
    """The service's environment plus the jobs settings; Celery URLs follow the backend's defaults."""
    env = service_env(backend, prefix, APP_JOBS_QUEUE=f"jobs-{prefix}", APP_JOBS_NOTIFY_CHUNK_SIZE="7",
                      APP_JOBS_STATS_INTERVAL_SECONDS="0", APP_JOBS_RETRY_BACKOFF_SECONDS="1",
                      APP_JOBS_RETRY_BACKOFF_MAX_SECONDS="4", APP_JOBS_LAYER_TIMEOUT_SECONDS="5",
                      APP_JOBS_DEDUP_TTL_SECONDS="600",
                      # "ops" calls the jobs API (admins only); the beat job reads GET /api/rooms with the service token
                      APP_ADMIN_USERNAMES="ops,ops2", APP_SERVICE_TOKEN="service-token-for-tests")
    env = {k: v for k, v in env.items() if not k.startswith("CELERY_")}
    env.update(extra)
    return env


def http(server: LiveServer, method: str, path: str, token: str | None,
         body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One JSON request to the service, with the bearer token when given."""
    return server.request(method, path, body, token)


@dataclass
class Stack:
    backend: str
    server: LiveServer
    worker: CeleryProcess
    env: dict[str, str]

    def call(self, method: str, path: str, token: str | None, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        return http(self.server, method, path, token, body)

    def wait_job(self, token: str, job_id: str, states: tuple[str, ...] = ("SUCCESS",), timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            status, body = self.call("GET", f"/api/jobs/{job_id}", token)
            assert status == 200, body
            if body["state"] in states:
                return body
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} not in {states} after {timeout}s: {body}\n{self.worker.logs()[-3000:]}")


@contextlib.contextmanager
def run_stack(backend: str, prefix: str, tmp_path: Path, name: str = "w", env: dict[str, str] | None = None,
              **worker_env: str) -> Iterator[Stack]:
    """gunicorn with 2 workers, then a Celery worker (prefork, 2 processes) told where the service is."""
    env = env or stack_env(backend, prefix)
    with live_server(env, workers=2, tmp_path=tmp_path) as server:
        wenv = {**env, "APP_JOBS_SERVICE_URL": server.url, **worker_env}
        with celery_worker(wenv, tmp_path, f"{name}{prefix}") as worker:
            yield Stack(backend, server, worker, wenv)


@pytest.fixture(scope="module", params=distributed_backends())
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One service and worker per backend, shared by a module's tests (each uses its own rooms and users)."""
    require_broker(request.param)
    prefix, tmp_path = f"t{secrets.token_hex(5)}", tmp_path_factory.mktemp(f"stack-{request.param}")
    if request.param in ("nats", "inmemory"):
        require_broker("redis")  # the Celery broker of the nats stack
    extra = {}
    if request.param == "rabbitmq":  # rpc:// results reach only the caller: job state needs Redis here
        require_broker("redis")
        extra = {"CELERY_RESULT_BACKEND": URLS["redis"]}
    with run_stack(request.param, prefix, tmp_path, env=stack_env(request.param, prefix, **extra)) as running:
        yield running
