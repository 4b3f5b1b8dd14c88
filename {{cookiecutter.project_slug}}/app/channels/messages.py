"""Envelope builders: ``websocket.send`` messages the consumer writes to its socket as they are."""

from __future__ import annotations

from typing import Any

from .base import BaseChannelLayer


def websocket_json_message(body: Any, event: str | None = None) -> dict[str, Any]:
    """``{"type": "websocket.send", "mode": "json", "body": body}``; the consumer sends ``body`` as JSON."""
    message: dict[str, Any] = {"type": "websocket.send", "mode": "json", "body": body}
    if event is not None:
        message["event"] = event
    return message


def websocket_bytes_message(body: bytes, event: str | None = None) -> dict[str, Any]:
    """``{"type": "websocket.send", "mode": "bytes", "body": body}``; sent as a binary frame."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"bytes message body must be bytes, not {type(body).__name__}")
    message: dict[str, Any] = {"type": "websocket.send", "mode": "bytes", "body": bytes(body)}
    if event is not None:
        message["event"] = event
    return message


async def send_json_message(layer: BaseChannelLayer, channel: str, body: Any, event: str | None = None) -> None:
    await layer.send(channel, websocket_json_message(body, event))


async def send_bytes_message(layer: BaseChannelLayer, channel: str, body: bytes, event: str | None = None) -> None:
    await layer.send(channel, websocket_bytes_message(body, event))
