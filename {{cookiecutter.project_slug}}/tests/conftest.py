from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.channels import BaseChannelLayer
from app.channels.config import build_layer

from .brokers import installed_backends, layer_config, require_broker

LayerFactory = Callable[..., BaseChannelLayer]


@pytest.fixture(params=installed_backends())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    require_broker(name)
    return name


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(5)}"


@pytest.fixture
async def make_layer(backend: str, prefix: str) -> AsyncIterator[LayerFactory]:
    """Layers of one backend sharing a fresh prefix; each is flushed and closed afterwards."""
    layers: list[BaseChannelLayer] = []

    def make(**overrides: Any) -> BaseChannelLayer:
        layer = build_layer(backend, {**layer_config(backend, prefix), **overrides})
        layers.append(layer)
        return layer

    yield make
    open_layers = [layer for layer in layers if not layer.closed]
    # each layer flushes the prefix and whatever broker objects it declared itself
    cleaners = open_layers or [build_layer(backend, layer_config(backend, prefix))]
    for layer in cleaners:
        await layer.flush()
    for layer in cleaners:
        await layer.close()
