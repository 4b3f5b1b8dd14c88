"""Celery's broker and result backend on the layer's Redis (kombu's Redis transport: pushes, no polling)."""

from __future__ import annotations

from typing import Any

from ...exceptions import ConfigurationError
from .connections import DEFAULT_URL

SCHEMES = ("redis://", "rediss://", "unix://")


def celery_urls(config: dict[str, Any]) -> tuple[str, str]:
    """``(broker, result backend)``: both the layer's ``url`` (its default when unset).

    kombu speaks to one Redis server: a Cluster, sharded ``hosts`` or Sentinel layer needs
    ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND`` set explicitly.
    """
    for key in ("cluster", "hosts", "sentinels"):
        if config.get(key):
            raise ConfigurationError(
                f"Celery cannot follow a Redis layer with {key}: kombu's Redis transport needs one server;"
                " set CELERY_BROKER_URL and CELERY_RESULT_BACKEND"
            )
    url = config.get("url") or DEFAULT_URL
    if not isinstance(url, str) or not url.startswith(SCHEMES):
        raise ConfigurationError(f"the Redis layer's url must start with {', '.join(SCHEMES)} for Celery")
    return url, url
