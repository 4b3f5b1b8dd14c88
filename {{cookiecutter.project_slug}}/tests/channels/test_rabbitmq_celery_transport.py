"""Celery on the RabbitMQ layer's broker: AMQP with ``rpc://`` results."""

from __future__ import annotations

import inspect

import pytest

from app.channels import ConfigurationError
from app.channels.backends.rabbitmq import RabbitMQChannelLayer
from app.channels.backends.rabbitmq.celery_transport import celery_urls
from app.worker.settings import default_celery_urls


def test_through_the_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "rabbitmq")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_RABBITMQ_URL", "amqp://u:p@mq:5672/vh")
    assert default_celery_urls() == ("amqp://u:p@mq:5672/vh", "rpc://")
    monkeypatch.delenv("FASTAPI_WEBSOCKETS_RABBITMQ_URL")
    layer_default = inspect.signature(RabbitMQChannelLayer.__init__).parameters["url"].default
    assert default_celery_urls() == (layer_default, "rpc://")


def test_a_url_kombu_cannot_use_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="amqp://"):
        celery_urls({"url": "http://mq:15672/"})
