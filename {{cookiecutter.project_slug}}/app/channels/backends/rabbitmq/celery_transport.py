"""Celery on the layer's RabbitMQ: kombu's AMQP transport, results over ``rpc://`` (reply queues).

``rpc://`` results reach only the caller that sent the task: set ``CELERY_RESULT_BACKEND`` to a
Redis or PostgreSQL for job states read by other processes (docs/celery.md).
"""

from __future__ import annotations

import inspect
from typing import Any

from ...exceptions import ConfigurationError
from . import RabbitMQChannelLayer

#: The layer's own default, read from its signature so that the two can never disagree.
DEFAULT_URL: str = inspect.signature(RabbitMQChannelLayer.__init__).parameters["url"].default


def celery_urls(config: dict[str, Any]) -> tuple[str, str]:
    """``(broker, result backend)``: the layer's ``url`` (its default when unset) and ``rpc://``."""
    url = config.get("url") or DEFAULT_URL
    if not isinstance(url, str) or not url.startswith(("amqp://", "amqps://")):
        raise ConfigurationError("the RabbitMQ layer's url must start with amqp:// or amqps:// for Celery")
    return url, "rpc://"
