"""Celery next to the NATS layer: kombu has no NATS transport, so jobs go through Redis.

The Redis is its own setting, not the layer's: ``FASTAPI_WEBSOCKETS_REDIS_URL`` (default
``redis://localhost:6379/0``), or ``CELERY_BROKER_URL`` / ``CELERY_RESULT_BACKEND`` themselves.
Redis's transport is first-class in Celery (pushes, no polling) and also holds results and dedup
markers; the SQLAlchemy transport would add a polled database only to queue jobs.
"""

from __future__ import annotations

from typing import Any

from ....worker.settings import redis_celery_urls


def celery_urls(config: dict[str, Any]) -> tuple[str, str]:
    """``(broker, result backend)``, both the Redis of ``FASTAPI_WEBSOCKETS_REDIS_URL``; the NATS
    layer's ``config`` names no Redis, so it is not read."""
    del config
    return redis_celery_urls()
