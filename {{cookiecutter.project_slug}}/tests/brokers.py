"""Where the tests find each broker, and whether it answers (CI must never skip one)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

BACKENDS_DIR = Path(__file__).resolve().parent.parent / "app" / "channels" / "backends"
ALL_BACKENDS = ("inmemory", "redis", "postgresql", "nats", "rabbitmq")

URLS = {
    "redis": os.environ.get("FASTAPI_WEBSOCKETS_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "postgresql": os.environ.get("FASTAPI_WEBSOCKETS_POSTGRESQL_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    "nats": os.environ.get("FASTAPI_WEBSOCKETS_NATS_SERVERS", "nats://127.0.0.1:4222"),
    "rabbitmq": os.environ.get("FASTAPI_WEBSOCKETS_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
}


def installed_backends() -> list[str]:
    """The backends this project vendors (post-generation may remove some), narrowed by TEST_BACKENDS."""
    present = [name for name in ALL_BACKENDS if (BACKENDS_DIR / name / "layer.py").exists()]
    wanted = os.environ.get("TEST_BACKENDS")
    if wanted:
        present = [name for name in present if name in wanted.split(",")]
    return present


def distributed_backends() -> list[str]:
    return [name for name in installed_backends() if name != "inmemory"]


def layer_config(backend: str, prefix: str) -> dict[str, Any]:
    """A CONFIG dict for ``backend`` whose names cannot collide with another test's."""
    config: dict[str, Any] = {"prefix": prefix}
    if backend == "redis":
        config["url"] = URLS["redis"]
    elif backend == "postgresql":
        config["dsn"] = URLS["postgresql"]
    elif backend == "nats":
        config["servers"] = URLS["nats"].split(",")
    elif backend == "rabbitmq":
        config["url"] = URLS["rabbitmq"]
    return config


def answers(url: str) -> bool:
    parts = urlsplit(url.split(",")[0])
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=1):
            return True
    except OSError:
        return False


def require_broker(backend: str) -> None:
    """Skip when the broker is down on a laptop; fail under CI=true, where a skip would hide a backend."""
    if backend == "inmemory" or answers(URLS[backend]):
        return
    message = f"{backend} broker at {URLS[backend]} does not answer"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: broker suites must not skip)")
    pytest.skip(message)
