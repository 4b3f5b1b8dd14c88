"""Celery and job settings: ``CELERY_*`` URLs (defaults follow the channel layer's broker) and ``APP_JOBS_*``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache

from dotenv import load_dotenv
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..settings import ROOT

DEFAULT_URLS = {
    "redis": ("FASTAPI_WEBSOCKETS_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "postgresql": ("FASTAPI_WEBSOCKETS_POSTGRESQL_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "rabbitmq": ("FASTAPI_WEBSOCKETS_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}


def _url(environ: Mapping[str, str], backend: str) -> str:
    variable, default = DEFAULT_URLS[backend]
    return environ.get(variable) or default


def sqlalchemy_url(dsn: str) -> str:
    """A libpq DSN as a SQLAlchemy URL on psycopg2 (the ``celery`` extra; SQLAlchemy 2.1 defaults to psycopg 3)."""
    for scheme in ("postgresql://", "postgres://"):
        if dsn.startswith(scheme):
            return "postgresql+psycopg2://" + dsn.removeprefix(scheme)
    return dsn


def default_celery_urls(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(broker, result backend)`` for the stack ``FASTAPI_WEBSOCKETS_BACKEND`` names.

    rabbitmq: the same RabbitMQ, results over ``rpc://``; postgresql: kombu's SQLAlchemy transport
    (``sqla+postgresql://``) and ``db+postgresql://`` results; redis: the layer's Redis for both.
    nats (and inmemory): kombu has no NATS transport, so Redis (``FASTAPI_WEBSOCKETS_REDIS_URL`` or
    127.0.0.1:6379) -- the SQLAlchemy transport polls a table, which suits a stack that already
    runs PostgreSQL, not one that would add a database only to queue jobs.
    """
    environ = os.environ if environ is None else environ
    backend = environ.get("FASTAPI_WEBSOCKETS_BACKEND", "inmemory").strip().lower()
    if backend == "rabbitmq":
        return _url(environ, "rabbitmq"), "rpc://"
    if backend == "postgresql":
        dsn = sqlalchemy_url(_url(environ, "postgresql"))
        return f"sqla+{dsn}", f"db+{dsn}"
    redis_url = _url(environ, "redis")
    return redis_url, redis_url


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
    #: Where "already sent" markers live; default: the result backend when it is Redis or
    #: PostgreSQL, else the layer's Redis URL (see docs/celery.md).
    dedup_url: str | None = None
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
    load_dotenv(ROOT / ".env", override=False)
    broker, backend = default_celery_urls()
    urls = CeleryUrls()
    return urls.celery_broker_url or broker, urls.celery_result_backend or backend
