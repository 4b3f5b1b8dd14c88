"""Celery next to the NATS layer: kombu has no NATS transport, so jobs use the Redis of its own setting."""

from __future__ import annotations

import pytest

from app.channels.backends.nats.celery_transport import celery_urls
from app.worker.settings import FALLBACK_REDIS_URL, default_celery_urls


def test_redis_of_its_own_setting_whatever_the_layer_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "nats")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_NATS_SERVERS", "nats://n:4222")
    monkeypatch.delenv("FASTAPI_WEBSOCKETS_REDIS_URL", raising=False)
    assert default_celery_urls() == (FALLBACK_REDIS_URL, FALLBACK_REDIS_URL)
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_REDIS_URL", "redis://jobs:1/4")
    assert default_celery_urls() == ("redis://jobs:1/4", "redis://jobs:1/4")
    assert celery_urls({"servers": ["nats://elsewhere:4222"]}) == ("redis://jobs:1/4", "redis://jobs:1/4")
