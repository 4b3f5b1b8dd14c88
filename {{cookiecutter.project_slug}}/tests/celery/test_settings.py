"""Celery's URLs: explicit ``CELERY_*`` settings, else the layer's broker package says (dispatch by backend)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.channels import ConfigurationError
from app.worker.settings import FALLBACK_REDIS_URL, celery_urls, default_celery_urls, sqlalchemy_url

LAYER_VARIABLES = ("FASTAPI_WEBSOCKETS_", "CELERY_")


@pytest.fixture(autouse=True)
def environ() -> Iterator[None]:
    """No layer or Celery variable from outside; whatever a test (or ``.env``) adds goes again."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith(LAYER_VARIABLES)]:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_explicit_urls_win_without_reading_the_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "no.such.Layer")  # never imported
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://jobs:1/0")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "db+postgresql+psycopg2://r@db/x")
    assert celery_urls() == ("redis://jobs:1/0", "db+postgresql+psycopg2://r@db/x")


def test_one_explicit_url_the_other_from_the_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "inmemory")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_REDIS_URL", "redis://r:2/3")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "db+postgresql+psycopg2://r@db/x")
    assert celery_urls() == ("redis://r:2/3", "db+postgresql+psycopg2://r@db/x")


def test_a_backend_without_a_transport_gets_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "inmemory")
    assert default_celery_urls() == (FALLBACK_REDIS_URL, FALLBACK_REDIS_URL)
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_REDIS_URL", "redis://r:1/2")
    assert default_celery_urls() == ("redis://r:1/2", "redis://r:1/2")


def test_dispatch_goes_through_the_backends_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A custom dotted backend with a ``celery_transport`` next to its layer is asked, with its CONFIG."""
    package = tmp_path / "custom_broker"
    package.mkdir()
    (package / "__init__.py").write_text("from .layer import CustomLayer\n")
    (package / "layer.py").write_text(
        "from app.channels.backends.inmemory import InMemoryChannelLayer\n\n"
        "class CustomLayer(InMemoryChannelLayer):\n    pass\n"
    )
    (package / "celery_transport.py").write_text(
        "def celery_urls(config):\n    return 'custom://broker', f'custom://results/{len(config)}'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "custom_broker.CustomLayer")
    assert default_celery_urls() == ("custom://broker", "custom://results/0")


@pytest.mark.parametrize(
    ("variables", "message"),
    [({"FASTAPI_WEBSOCKETS_BACKEND": "nosuchbroker"}, "unknown channel layer backend"),
     ({"FASTAPI_WEBSOCKETS_BACKEND": "inmemory", "FASTAPI_WEBSOCKETS_INMEMORY_CAPACITY": "lots"},
      "FASTAPI_WEBSOCKETS_INMEMORY_CAPACITY")],
)
def test_a_bad_layer_config_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError, match=message):
        celery_urls()


def test_sqlalchemy_url_picks_psycopg2() -> None:
    assert sqlalchemy_url("postgresql://u:p@db:5433/x") == "postgresql+psycopg2://u:p@db:5433/x"
    assert sqlalchemy_url("postgres://u@db/x") == "postgresql+psycopg2://u@db/x"
    assert sqlalchemy_url("sqlite:///x.db") == "sqlite:///x.db"
