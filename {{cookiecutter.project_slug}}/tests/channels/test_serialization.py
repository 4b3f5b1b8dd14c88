from __future__ import annotations

import datetime
from collections.abc import Mapping
from types import MappingProxyType

import pytest

from app.channels.exceptions import InvalidMessage, MessageTooLarge, SerializationError
from app.channels.serialization import Serializer, validate_message


def test_round_trip_keeps_bytes_and_nesting() -> None:
    serializer = Serializer(1024)
    message = {"type": "m", "body": b"\x00\xff", "nested": {"list": [1, 2.5, None, "x"]}}
    expires_at, decoded = serializer.loads(serializer.dumps(message, 60))
    assert decoded == message
    assert expires_at > 0


def test_unserializable_value_is_a_clear_error() -> None:
    with pytest.raises(SerializationError, match="'m' cannot be serialized"):
        Serializer(1024).dumps({"type": "m", "when": datetime.datetime.now()}, 60)


def test_too_large_message_names_the_limit() -> None:
    with pytest.raises(MessageTooLarge, match="max_message_size=100"):
        Serializer(100).dumps({"type": "m", "body": b"x" * 200}, 60)


@pytest.mark.parametrize("message", [None, [], "text", b"bytes", {"type": "m", "__asgi_x": 1}])
def test_invalid_messages(message: object) -> None:
    with pytest.raises(InvalidMessage):
        validate_message(message)


@pytest.mark.parametrize("message", [{}, {"no": "type"}, {"type": 3}, MappingProxyType({"text": "hi"})])
def test_any_mapping_is_a_message(message: Mapping[str, object]) -> None:
    """As in Channels and the seed: ``type`` matters only where a consumer dispatches."""
    validated = validate_message(message)
    assert isinstance(validated, dict) and validated == dict(message)


def test_encryption_with_rotating_keys() -> None:
    old = Serializer(4096, ["old-key"])
    rotated = Serializer(4096, ["new-key", "old-key"])
    data = old.dumps({"type": "m", "secret": "s3cr3t"}, 60)
    assert b"s3cr3t" not in data
    assert rotated.loads(data)[1]["secret"] == "s3cr3t"
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidToken
        Serializer(4096, ["other"]).loads(data)
