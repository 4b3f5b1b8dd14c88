"""Celery on the Redis layer's server: the layer's URL and defaults, or a clear refusal."""

from __future__ import annotations

import pytest

from app.channels import ConfigurationError
from app.channels.backends.redis.celery_transport import celery_urls
from app.channels.backends.redis.connections import DEFAULT_URL
from app.worker.settings import FALLBACK_REDIS_URL, default_celery_urls


def test_through_the_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "redis")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_REDIS_URL", "redis://:pw@r:1/2")
    assert default_celery_urls() == ("redis://:pw@r:1/2", "redis://:pw@r:1/2")
    monkeypatch.delenv("FASTAPI_WEBSOCKETS_REDIS_URL")
    assert default_celery_urls() == (DEFAULT_URL, DEFAULT_URL)  # the layer's own default
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_REDIS_CLUSTER", "true")
    with pytest.raises(ConfigurationError, match="CELERY_BROKER_URL"):
        default_celery_urls()


def test_the_fallback_redis_is_the_layers_default() -> None:
    assert FALLBACK_REDIS_URL == DEFAULT_URL


@pytest.mark.parametrize(
    "config",
    [{"cluster": True}, {"hosts": ["redis://a:1/0", "redis://b:1/0"]}, {"sentinels": ["127.0.0.1:26379"]},
     {"url": "http://r:1/0"}],
)
def test_what_kombu_cannot_follow_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        celery_urls(config)


def test_tls_and_unix_sockets_pass() -> None:
    assert celery_urls({"url": "rediss://r:6380/0"}) == ("rediss://r:6380/0",) * 2
    assert celery_urls({"url": "unix:///run/redis.sock"}) == ("unix:///run/redis.sock",) * 2
