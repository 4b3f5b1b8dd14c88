"""Celery on the layer's PostgreSQL: kombu's SQLAlchemy transport and SQLAlchemy results (psycopg2).

The transport polls a table, which suits a stack that already runs PostgreSQL and no other broker.
"""

from __future__ import annotations

from typing import Any

from ....worker.settings import sqlalchemy_url
from ...exceptions import ConfigurationError
from .layer import DEFAULT_DSN


def celery_urls(config: dict[str, Any]) -> tuple[str, str]:
    """``(broker, result backend)``: ``sqla+`` and ``db+`` the layer's ``dsn`` (its default when unset).

    SQLAlchemy needs a URL: a libpq keyword DSN (``host=... dbname=...``) is refused.
    """
    dsn = config.get("dsn") or DEFAULT_DSN
    if not isinstance(dsn, str) or not dsn.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(
            "Celery follows the PostgreSQL layer only when its dsn is a postgresql:// URL;"
            " set CELERY_BROKER_URL and CELERY_RESULT_BACKEND otherwise"
        )
    url = sqlalchemy_url(dsn)
    return f"sqla+{url}", f"db+{url}"
