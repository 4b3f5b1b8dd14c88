"""Celery and job settings: ``CELERY_*`` URLs (defaults follow the channel layer's broker) and ``APP_JOBS_*``."""

from __future__ import annotations

import importlib
import os
from functools import lru_cache

from dotenv import load_dotenv
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..channels.config import config_from_env, import_backend
from ..settings import ROOT

#: Where jobs go when the layer's broker has no Celery transport (nats, inmemory, a custom backend):
#: the Redis of ``FASTAPI_WEBSOCKETS_REDIS_URL``, by default the one the Redis layer defaults to.
FALLBACK_REDIS_URL = "redis://localhost:6379/0"


def sqlalchemy_url(dsn: str) -> str:
    """A libpq DSN as a SQLAlchemy URL on psycopg2 (the ``celery`` extra; SQLAlchemy 2.1 defaults to psycopg 3)."""
    for scheme in ("postgresql://", "postgres://"):
        if dsn.startswith(scheme):
            return "postgresql+psycopg2://" + dsn.removeprefix(scheme)
    return dsn


def redis_celery_urls() -> tuple[str, str]:
    """``(broker, result backend)`` on the Redis of ``FASTAPI_WEBSOCKETS_REDIS_URL`` (or ``FALLBACK_REDIS_URL``)."""
    url = os.environ.get("FASTAPI_WEBSOCKETS_REDIS_URL") or FALLBACK_REDIS_URL
    return url, url


def default_celery_urls() -> tuple[str, str]:
    """``(broker, result backend)`` for the layer the environment describes.

    Each broker's package says how Celery reaches it (``backends/<broker>/celery_transport.py``,
    given the layer's validated CONFIG, so its defaults are the layer's); a backend without one
    (inmemory, a custom dotted path) gets ``redis_celery_urls()``, as nats does (kombu has no NATS
    transport). A configuration Celery cannot follow raises ``ConfigurationError``.
    """
    entry = config_from_env()
    package = import_backend(entry["BACKEND"]).__module__.rpartition(".")[0]
    name = f"{package}.celery_transport"
    try:
        transport = importlib.import_module(name) if package else None
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        transport = None
    if transport is None:
        return redis_celery_urls()
    urls: tuple[str, str] = transport.celery_urls(entry["CONFIG"])
    return urls


class CeleryUrls(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    celery_broker_url: str | None = None
    celery_result_backend: str | None = None


class JobSettings(BaseSettings):
    """``APP_JOBS_*``: how the jobs fan out, retry and find the web service."""

    model_config = SettingsConfigDict(env_prefix="APP_JOBS_", extra="ignore")

    #: The queue every job goes to (run one worker pool per queue).
    queue: str = "chat-jobs"
    #: Users per notification subtask: a notification to 100,000 users is 100,000/chunk tasks.
    notify_chunk_size: int = Field(500, gt=0)
    #: Rooms per broadcast subtask.
    broadcast_chunk_size: int = Field(100, gt=0)
    #: Layer sends per second within one task (0: unlimited), to spare the broker during fan-out.
    send_rate: float = Field(0, ge=0)
    #: Seconds one layer operation may take before the task retries.
    layer_timeout_seconds: float = Field(10, gt=0)
    max_retries: int = Field(5, ge=0)
    retry_backoff_seconds: int = Field(1, gt=0)
    retry_backoff_max_seconds: int = Field(60, gt=0)
    soft_time_limit_seconds: float = Field(120, gt=0)
    time_limit_seconds: float = Field(150, gt=0)
    #: How long an "already sent" marker (table job_markers in APP_DATABASE_URL) is kept.
    dedup_ttl_seconds: int = Field(7 * 86400, gt=0)
    #: The web service, for ``GET /api/rooms`` (broadcast without a room list, room statistics).
    service_url: str = "http://127.0.0.1:8000"
    #: Seconds between room statistics posts (celery beat); 0 disables the schedule.
    stats_interval_seconds: float = Field(300, ge=0)


@lru_cache
def get_job_settings() -> JobSettings:
    load_dotenv(ROOT / ".env", override=False)
    return JobSettings()


def celery_urls() -> tuple[str, str]:
    """``CELERY_BROKER_URL`` / ``CELERY_RESULT_BACKEND``, each defaulting to ``default_celery_urls()``."""
    load_dotenv(ROOT / ".env", override=False)
    urls = CeleryUrls()
    if urls.celery_broker_url and urls.celery_result_backend:  # the layer's config is not consulted
        return urls.celery_broker_url, urls.celery_result_backend
    broker, backend = default_celery_urls()
    return urls.celery_broker_url or broker, urls.celery_result_backend or backend
