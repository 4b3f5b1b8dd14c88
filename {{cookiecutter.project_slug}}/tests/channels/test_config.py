from __future__ import annotations

from typing import Any

import pytest

from app.channels import ConfigurationError, get_channel_layer, get_channel_layer_from_env
from app.channels.backends.inmemory import InMemoryChannelLayer
from app.channels.config import config_from_env


def test_dict_config_and_aliases() -> None:
    layers: dict[str, dict[str, Any]] = {
        "default": {"BACKEND": "app.channels.backends.inmemory.InMemoryChannelLayer", "CONFIG": {"capacity": 5}},
        "events": {"BACKEND": "inmemory"},
    }
    layer = get_channel_layer(layers)
    assert isinstance(layer, InMemoryChannelLayer) and layer.capacity == 5
    assert isinstance(get_channel_layer(layers, alias="events"), InMemoryChannelLayer)
    with pytest.raises(ConfigurationError, match="no channel layer alias 'missing'"):
        get_channel_layer(layers, alias="missing")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"default": {"BACKEND": "nosuch"}}, "unknown channel layer backend 'nosuch'"),
        ({"default": {"BACKEND": "app.channels.nosuch.Layer"}}, "no module 'app.channels.nosuch'"),
        ({"default": {"BACKEND": "app.channels.config.ENV_PREFIX"}}, "not a channel layer class"),
        ({"default": {"CONFIG": {}}}, "needs a 'BACKEND' key"),
        ({"default": {"BACKEND": "inmemory", "CONFIG": {"capasity": 5}}}, "unknown CONFIG key"),
        ({"default": {"BACKEND": "inmemory", "CONFIG": {"capacity": 0}}}, "capacity must be positive"),
        ({"default": {"BACKEND": "inmemory", "OPTIONS": {}}}, "unknown key"),
    ],
)
def test_bad_config_is_a_clear_error(config: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigurationError, match=message):
        get_channel_layer(config)


def test_env_single_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "inmemory")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_INMEMORY_CAPACITY", "7")
    layer = get_channel_layer_from_env()
    assert isinstance(layer, InMemoryChannelLayer) and layer.capacity == 7


def test_env_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_ALIASES", "default,events")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_DEFAULT_BACKEND", "inmemory")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_EVENTS_BACKEND", "inmemory")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_EVENTS_INMEMORY_CAPACITY", "3")
    assert get_channel_layer_from_env("events").capacity == 3
    with pytest.raises(ConfigurationError, match="not in FASTAPI_WEBSOCKETS_ALIASES"):
        get_channel_layer_from_env("other")


def test_malformed_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "inmemory")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_INMEMORY_CAPACITY", "lots")
    with pytest.raises(ConfigurationError, match="FASTAPI_WEBSOCKETS_INMEMORY_CAPACITY"):
        config_from_env()


def test_unknown_backend_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "kafka")
    with pytest.raises(ConfigurationError, match="unknown channel layer backend 'kafka'"):
        get_channel_layer_from_env()


def test_missing_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from app.channels import BackendNotInstalled
    from app.channels.backends import import_client

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(BackendNotInstalled, match=r"pip install '\.\[redis\]'"):
        import_client("redis", "redis")


async def test_encryption_keys_from_the_environment_encrypt_the_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "inmemory")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_INMEMORY_SYMMETRIC_ENCRYPTION_KEYS", "current-key,previous-key")
    assert config_from_env()["CONFIG"]["symmetric_encryption_keys"] == ["current-key", "previous-key"]
    layer = get_channel_layer_from_env()
    wire = layer.serializer.dumps({"type": "m", "text": "plain words"}, 60)
    assert b"plain words" not in wire
    await layer.send("test.encrypted", {"type": "m", "text": "plain words"})
    assert (await layer.receive("test.encrypted"))["text"] == "plain words"
    await layer.close()
