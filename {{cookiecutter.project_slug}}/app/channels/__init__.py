"""A Channels-style channel layer for FastAPI WebSockets, with five interchangeable backends.

Keeps the public API of ``fastapi-websockets`` 0.1.0. The consumer classes import Starlette,
so they load on first use: Celery workers and scripts can use the layer without FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import BaseChannelLayer
from .config import get_channel_layer, get_channel_layer_from_env
from .exceptions import (
    BackendNotInstalled,
    BrokerUnavailable,
    ChannelFull,
    ChannelLayerError,
    ConfigurationError,
    InvalidChannelName,
    InvalidMessage,
    LayerClosed,
    MessageTooLarge,
    SerializationError,
)
from .messages import send_bytes_message, send_json_message, websocket_bytes_message, websocket_json_message

if TYPE_CHECKING:
    from .consumer import AsyncJsonWebSocketConsumer, AsyncWebSocketConsumer

__all__ = [
    "AsyncJsonWebSocketConsumer",
    "AsyncWebSocketConsumer",
    "BackendNotInstalled",
    "BaseChannelLayer",
    "BrokerUnavailable",
    "ChannelFull",
    "ChannelLayerError",
    "ConfigurationError",
    "InvalidChannelName",
    "InvalidMessage",
    "LayerClosed",
    "MessageTooLarge",
    "SerializationError",
    "get_channel_layer",
    "get_channel_layer_from_env",
    "send_bytes_message",
    "send_json_message",
    "websocket_bytes_message",
    "websocket_json_message",
]


def __getattr__(name: str) -> Any:
    if name in ("AsyncJsonWebSocketConsumer", "AsyncWebSocketConsumer"):
        from . import consumer

        return getattr(consumer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
