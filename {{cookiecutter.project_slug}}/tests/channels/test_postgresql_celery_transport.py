"""Celery on the PostgreSQL layer's database: SQLAlchemy transport and results over psycopg2."""

from __future__ import annotations

import pytest

from app.channels import ConfigurationError
from app.channels.backends.postgresql.celery_transport import celery_urls
from app.channels.backends.postgresql.layer import DEFAULT_DSN
from app.worker.settings import default_celery_urls


def test_through_the_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "postgresql")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_POSTGRESQL_DSN", "postgresql://u@db/x")
    assert default_celery_urls() == ("sqla+postgresql+psycopg2://u@db/x", "db+postgresql+psycopg2://u@db/x")
    monkeypatch.delenv("FASTAPI_WEBSOCKETS_POSTGRESQL_DSN")
    broker, results = default_celery_urls()  # the layer's own default
    assert (broker, results) == (f"sqla+postgresql+psycopg2://{DEFAULT_DSN.split('://')[1]}",
                                 f"db+postgresql+psycopg2://{DEFAULT_DSN.split('://')[1]}")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_POSTGRESQL_POLL_INTERVAL", "often")
    with pytest.raises(ConfigurationError, match="POLL_INTERVAL"):
        default_celery_urls()


def test_a_keyword_dsn_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="CELERY_BROKER_URL"):
        celery_urls({"dsn": "host=db dbname=x password=secret"})
